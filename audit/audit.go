// Package audit writes buildgw's audit log: one JSON line per
// authentication failure, per policy decision and per job outcome, saying
// who asked (the identity and its claims), for what (the context digest, the
// Dockerfile, the destinations, the names of the build args), what was
// decided, what was pushed and how long it took.
//
// Secrets are never written. Callers must keep them out of records in the
// first place: a Record holds build-arg names, never values (see
// [BuildArgNames]), and never a token, password or registry credential. The
// Logger additionally redacts every secret it is told about (see
// [WithSecrets], [Logger.Log] and [SecretBuildArgValues]) from the free
// text of each record, its reason and error, before writing it. That
// redaction is defence in depth against a secret leaking through text
// nobody expected to hold one, such as an error message quoting a command
// line; it is not a licence to put secrets in records. It never touches
// the record's structure: the identity and its claims, destinations, base
// images and rule names are written as they are, whatever a build arg
// holds, so that no job can blank out its own identity.
//
// # Log rotation
//
// With [WithFile] the log is opened with O_APPEND and every line is written
// with a single write(2), so lines from concurrent goroutines, and from
// several processes appending to the same file, never interleave.
//
// For external rotation with logrotate:
//
//   - "copytruncate" needs nothing: thanks to O_APPEND the next line lands
//     at the start of the truncated file. (Lines written between logrotate's
//     copy and its truncate are lost; that is inherent to copytruncate.)
//   - "create" (rename, the default) needs the process to reopen the path,
//     or it keeps writing into the renamed file. Send SIGHUP in logrotate's
//     postrotate script and call [Logger.Reopen] on it, as below.
//
// SIGHUP handling, in the program that owns the Logger l:
//
//	hup := make(chan os.Signal, 1)
//	signal.Notify(hup, syscall.SIGHUP)
//	go func() {
//		for range hup {
//			if err := l.Reopen(); err != nil {
//				log.Printf("reopening audit log: %v", err)
//			}
//		}
//	}()
//
// Alternatively [WithMaxSize] and [WithMaxBackups] make the Logger rotate
// by itself. Built-in rotation assumes this Logger is the file's only
// writer; with several processes sharing a file, rotate externally.
package audit

import (
	"sort"
	"time"

	"github.com/buildgw/buildgw/auth"
)

// Events: what a Record is about.
const (
	// EventAuthn is an authentication failure: credentials were presented
	// but were not valid.
	EventAuthn = "authn"
	// EventAuthz is a policy decision on an authenticated request.
	EventAuthz = "authz"
	// EventBuild is a job's outcome.
	EventBuild = "build"
)

// Decisions of an EventAuthz Record.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// Record is one audit line. Empty fields are left out of the line.
type Record struct {
	// Time is when the event happened. Log fills in the current time, in
	// UTC, when it is zero.
	Time time.Time `json:"time"`
	// Event is EventAuthn, EventAuthz or EventBuild.
	Event     string `json:"event"`
	RequestID string `json:"request_id,omitempty"`
	JobID     string `json:"job_id,omitempty"`
	// Identity is who the request came from: name, kind, issuer and
	// attributes (the verified claims). Nil for authentication failures.
	Identity *auth.Identity `json:"identity,omitempty"`
	// Via is set when the identity acted through a capability rather
	// than its own credentials: "read_token" for a build's read token.
	Via      string `json:"via,omitempty"`
	SourceIP string `json:"source_ip,omitempty"`
	// Action is what was asked for, e.g. "build.submit", "build.cancel".
	Action string `json:"action,omitempty"`
	// Decision is DecisionAllow or DecisionDeny.
	Decision string `json:"decision,omitempty"`
	// Rule names the policy rule that decided.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`

	ContextSHA256 string `json:"context_sha256,omitempty"`
	// Dockerfile is the Dockerfile's path in the context.
	Dockerfile       string   `json:"dockerfile,omitempty"`
	DockerfileSHA256 string   `json:"dockerfile_sha256,omitempty"`
	Destinations     []string `json:"destinations,omitempty"`
	// BuildArgNames are the names of the build args, never their values:
	// build args routinely carry tokens. Fill it with BuildArgNames.
	BuildArgNames []string `json:"build_arg_names,omitempty"`

	Runner string `json:"runner,omitempty"`
	// Status is the job's final status: succeeded, failed or cancelled.
	Status string `json:"status,omitempty"`
	// Digest is the pushed manifest's digest.
	Digest string `json:"digest,omitempty"`
	Error  string `json:"error,omitempty"`
	// BaseImages are the images the build pulled, as NAME@DIGEST, resolved
	// by the gateway before the build.
	BaseImages []string `json:"base_images,omitempty"`

	QueuedSeconds float64 `json:"queued_seconds,omitempty"`
	BuildSeconds  float64 `json:"build_seconds,omitempty"`
	PushSeconds   float64 `json:"push_seconds,omitempty"`
	TotalSeconds  float64 `json:"total_seconds,omitempty"`
}

// BuildArgNames returns the names of args, sorted, so that a Record can say
// which build args a build had without holding their values. It returns
// nil for no args.
func BuildArgNames(args map[string]string) []string {
	if len(args) == 0 {
		return nil
	}
	names := make([]string, 0, len(args))
	for name := range args {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Package api holds the wire types of buildgw's HTTP API, v1. They are shared
// by the server (api/server) and the client (api/client), so this package has
// no dependencies beyond the standard library.
package api

import (
	"strings"
	"time"
)

// Status is the state of a build.
type Status string

// The states a build moves through. Queued, Running and Pushing are live;
// the others are final.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusPushing   Status = "pushing"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Final reports whether no further transition can happen.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// BuildSpec is the JSON body of the "spec" part of POST /v1/builds.
type BuildSpec struct {
	// Dockerfile is relative to the context. Default "Dockerfile".
	Dockerfile string `json:"dockerfile,omitempty"`
	// Destinations are the image references to push; at least one.
	Destinations []string          `json:"destinations"`
	BuildArgs    map[string]string `json:"build_args,omitempty"`
	// SecretBuildArgs names build args whose values are secret: the audit
	// log redacts them from error messages. Args named like *TOKEN*,
	// *SECRET*, *PASSWORD*, *PASSWD*, *KEY*, *CREDENTIAL* or *AUTH*, and
	// values shaped like generated tokens, are treated as secret anyway.
	// Values are never written to the audit log in any case; redaction
	// covers error text that quotes them.
	SecretBuildArgs []string          `json:"secret_build_args,omitempty"`
	Target          string            `json:"target,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	// Runner is "kaniko" (default), "dind" or, where the gateway offers
	// it, "kubernetes".
	Runner string `json:"runner,omitempty"`
	// NoCache builds every step afresh: no cached layer or result of an
	// earlier build is used, and none is kept. Default false.
	NoCache bool `json:"no_cache,omitempty"`
}

// Accepted is the 202 answer to POST /v1/builds.
type Accepted struct {
	ID        string `json:"id"`
	Status    Status `json:"status"`
	StatusURL string `json:"status_url"`
	LogsURL   string `json:"logs_url"`
	// ReadToken is a capability for this build alone: sent as
	// "Authorization: Bearer <ReadToken>", it reads the build's status and
	// log and cancels it until the gateway forgets the build, whatever
	// becomes of the credentials that submitted it (a CI ID token may
	// expire mid-build). It is sent only in this answer (a retried submit
	// gets a new one, which replaces it); the gateway keeps its sha256.
	// It starts with ReadTokenPrefix.
	ReadToken string `json:"read_token,omitempty"`
}

// ReadTokenPrefix starts every build read token, so that the gateway (and
// a secret scanner) tells one from other bearer tokens.
const ReadTokenPrefix = "bgr_"

// ErrRestarted starts the error of a build that the gateway stopped
// without finishing it, because it restarted: the build will not resume,
// but the same submission may be sent again (with the same
// Idempotency-Key, it then starts a new build).
const ErrRestarted = "interrupted: gateway restarted"

// Interrupted reports whether the build failed because the gateway
// restarted while it ran or waited.
func (b *Build) Interrupted() bool {
	return b.Status == StatusFailed && strings.HasPrefix(b.Error, ErrRestarted)
}

// Build is the answer to GET /v1/builds/{id}.
type Build struct {
	ID           string     `json:"id"`
	Status       Status     `json:"status"`
	Digest       string     `json:"digest,omitempty"`
	Destinations []string   `json:"destinations"`
	Runner       string     `json:"runner"`
	Error        string     `json:"error,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
	// BaseImages are the images the build started from, as the gateway
	// resolved them before it ran (every stage's FROM); the pushed image
	// names the final stage's in its annotations.
	BaseImages []BaseImage `json:"base_images,omitempty"`
}

// BaseImage is an image a build started from.
type BaseImage struct {
	// Name is the reference the Dockerfile names, after ARG substitution.
	Name string `json:"name"`
	// Digest is the manifest digest the gateway resolved Name to.
	Digest string `json:"digest"`
}

// BuildList is the answer to GET /v1/builds.
type BuildList struct {
	Builds []Build `json:"builds"`
}

// Error codes carried in ErrorBody. Each maps to one HTTP status in
// api/server.
const (
	CodeUnauthorized   = "UNAUTHORIZED"
	CodeDenied         = "DENIED"
	CodeInvalidSpec    = "INVALID_SPEC"
	CodeInvalidContext = "INVALID_CONTEXT"
	CodeTooLarge       = "TOO_LARGE"
	CodeNotFound       = "NOT_FOUND"
	CodeConflict       = "CONFLICT"
	CodeUnavailable    = "UNAVAILABLE"
	// CodeQueueFull comes with 429 and a Retry-After header.
	CodeQueueFull = "QUEUE_FULL"
	// CodeTooSlow comes with 408: the upload arrived slower than the
	// gateway's minimum rate.
	CodeTooSlow  = "TOO_SLOW"
	CodeInternal = "INTERNAL"
)

// ErrorBody is the JSON body of every error response:
// {"error": {"code": ..., "message": ...}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names the problem.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// IdempotencyKeyHeader makes a retried submit return the build that the
// first attempt created instead of starting a second one.
const IdempotencyKeyHeader = "Idempotency-Key"

// MaxIdempotencyKey is the longest Idempotency-Key a gateway accepts.
const MaxIdempotencyKey = 255

// ValidIdempotencyKey reports whether k may be an Idempotency-Key: 1 to
// MaxIdempotencyKey printable ASCII characters, no space. The key is an
// index key of the job store and part of its JSON record, which must both
// hold it byte for byte (JSON would replace invalid UTF-8; PostgreSQL
// refuses it; bbolt refuses keys over 32 KiB).
func ValidIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > MaxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Readiness is the answer to GET /readyz, 200 when the gateway takes
// builds, else 503. It names what failed, never why: /readyz needs no
// authentication, and the reasons (paths, addresses) are in the
// gateway's log.
type Readiness struct {
	Ready bool `json:"ready"`
	// Runners maps each runner to "ok" or "unavailable".
	Runners map[string]string `json:"runners"`
	// Store is "ok" or "unavailable" (the job store, or the free space
	// of the state directory).
	Store string `json:"store"`
	// Failing names the failed checks, sorted: "store", "disk",
	// "runner:NAME"; "shutting_down" while the gateway drains.
	Failing []string `json:"failing,omitempty"`
	// ShuttingDown is set while the gateway drains after SIGTERM: not
	// ready, whatever the checks found.
	ShuttingDown bool `json:"shutting_down,omitempty"`
}

// Version is the answer to GET /version, which needs no authentication.
type Version struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Kaniko  string `json:"kaniko"`
}

// LogOffsetTrailer is the HTTP trailer with which a followed log stream
// (logs?follow=1) ends: the log offset it reached. A stream the gateway
// ends because it shuts down has a last line that is not part of the log
// (it says how to reattach); a client resumes from this offset.
const LogOffsetTrailer = "Buildgw-Log-Offset"

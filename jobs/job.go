package jobs

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs/store"
)

// Job is one accepted build.
type Job struct {
	ID    string
	Owner string
	Spec  *ValidSpec
	// ContextSHA256 is the sha256 of the uploaded context archive.
	ContextSHA256 string
	// DockerfileSHA256 is the sha256 of the Dockerfile as uploaded.
	DockerfileSHA256 string
	// Identity is the caller in full, for auditing.
	Identity auth.Identity
	// Grant is what authorization allowed this build.
	Grant Grant
	Log   *Log

	workspace string
	// idemKey is the submission's idempotency key, kept with the record.
	idemKey string
	// readTokenSHA256 is the sha256 of the build's read token (under mu);
	// zero for a build that has none.
	readTokenSHA256 [sha256.Size]byte

	// attempt fences the writes of a build held from a shared queue;
	// shipped is closed once its log is stored whole; adoptErr is why a
	// claimed build cannot run here.
	attempt  int
	shipped  chan struct{}
	adoptErr error
	// left is closed when a held build's run on this replica is over.
	left chan struct{}
	// await, set on a view of a build in a shared store, is how Wait
	// learns that it has ended (another replica may run it).
	await func(ctx context.Context) error

	// saveMu orders the writes of this job's record, so an older state
	// never overwrites a newer one.
	saveMu sync.Mutex

	mu          sync.Mutex
	transitions []store.Transition
	status      api.Status
	digest      string
	err         string
	created     time.Time
	started     time.Time
	finished    time.Time
	bases       []builder.BaseImage
	cancel      context.CancelCauseFunc // set while running

	// analysis is the Dockerfile as analyzed when the build was accepted,
	// until the job ends (a hostile Dockerfile's analysis is a few MiB:
	// finished jobs must not keep them); nil for a job recovered after a
	// restart.
	analysis *dockerfile.Analysis

	// cancelRequested is set by a Cancel that came after a worker took the
	// job off the queue but before it started it.
	cancelRequested bool
	// ending is set while the final state is being reported to observers,
	// before it is visible: a second finish then loses.
	ending bool
	done   chan struct{} // closed when the job reaches a final state
	// statusJSON is Snapshot encoded, kept until the job changes: status
	// pollers, hundreds per second, then cost neither encoding nor garbage
	// (fewer collections, whose pauses are what a busy host stretches).
	statusJSON []byte
}

// Snapshot returns the job's state as the API reports it.
func (j *Job) Snapshot() api.Build {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.snapshotLocked()
}

// SnapshotJSON returns Snapshot encoded as JSON, from a copy kept until
// the job changes. The caller must not modify it.
func (j *Job) SnapshotJSON() ([]byte, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.statusJSON == nil {
		b, err := json.Marshal(j.snapshotLocked())
		if err != nil {
			return nil, fmt.Errorf("encoding status of %s: %w", j.ID, err)
		}
		j.statusJSON = b
	}
	return j.statusJSON, nil
}

func (j *Job) snapshotLocked() api.Build {
	b := api.Build{
		ID:           j.ID,
		Status:       j.status,
		Digest:       j.digest,
		Destinations: append([]string(nil), j.Spec.Destinations...),
		Runner:       j.Spec.Runner,
		Error:        j.err,
		CreatedAt:    j.created,
		BaseImages:   apiBaseImages(j.bases),
	}
	if !j.started.IsZero() {
		t := j.started
		b.StartedAt = &t
	}
	if !j.finished.IsZero() {
		t := j.finished
		b.FinishedAt = &t
	}
	return b
}

// Status returns the job's current state.
func (j *Job) Status() api.Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.status
}

// Done is closed when the job reaches a final state.
func (j *Job) Done() <-chan struct{} { return j.done }

// setStatus moves the job to s unless it is already final. It reports
// whether the move happened.
func (j *Job) setStatus(s api.Status, now time.Time) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.status.Final() {
		return false
	}
	j.status, j.statusJSON = s, nil
	if s == api.StatusRunning {
		j.started = now
	}
	j.transitions = append(j.transitions, store.Transition{Status: s, At: now})
	return true
}

// finish ends the job. The first final state wins. notify, if not nil,
// gets the final state before anyone else can see it, so that whoever sees
// the job final also finds what notify wrote (its audit record).
func (j *Job) finish(s api.Status, digest, errMsg string, now time.Time, notify func(api.Build)) bool {
	j.mu.Lock()
	if j.status.Final() || j.ending {
		j.mu.Unlock()
		return false
	}
	j.ending = true
	b := j.snapshotLocked()
	j.mu.Unlock()
	if notify != nil {
		b.Status, b.Digest, b.Error, b.FinishedAt = s, digest, errMsg, &now
		notify(b)
	}
	j.mu.Lock()
	j.status, j.digest, j.err, j.finished, j.statusJSON = s, digest, errMsg, now, nil
	j.transitions = append(j.transitions, store.Transition{Status: s, At: now, Reason: errMsg})
	j.cancel = nil
	j.analysis = nil
	j.mu.Unlock()
	close(j.done)
	return true
}

// record returns the job as the store keeps it.
func (j *Job) record() *store.Record {
	grant, _ := json.Marshal(j.Grant)
	logPath := ""
	if j.Log != nil { // a build accepted into a shared store has none here
		logPath = j.Log.path
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return &store.Record{
		ID:               j.ID,
		Owner:            j.Owner,
		LimitTenant:      j.Grant.LimitTenant,
		Identity:         j.Identity,
		Spec:             j.Spec.BuildSpec,
		Grant:            grant,
		ContextSHA256:    j.ContextSHA256,
		DockerfileSHA256: j.DockerfileSHA256,
		IdempotencyKey:   j.idemKey,
		ReadTokenSHA256:  readTokenHex(j.readTokenSHA256),
		Status:           j.status,
		Digest:           j.digest,
		Error:            j.err,
		CreatedAt:        j.created,
		StartedAt:        j.started,
		FinishedAt:       j.finished,
		Transitions:      slices.Clone(j.transitions),
		BaseImages:       apiBaseImages(j.bases),
		LogPath:          logPath,
		Workspace:        j.workspace,
	}
}

// jobFromRecord rebuilds a job read from the store. Its Log is not set.
func jobFromRecord(r *store.Record, spec *ValidSpec) *Job {
	j := &Job{
		ID:               r.ID,
		Owner:            r.Owner,
		Identity:         r.Identity,
		Spec:             spec,
		ContextSHA256:    r.ContextSHA256,
		DockerfileSHA256: r.DockerfileSHA256,
		workspace:        r.Workspace,
		idemKey:          r.IdempotencyKey,
		status:           r.Status,
		digest:           r.Digest,
		err:              r.Error,
		created:          r.CreatedAt,
		started:          r.StartedAt,
		finished:         r.FinishedAt,
		transitions:      r.Transitions,
		done:             make(chan struct{}),
	}
	for _, b := range r.BaseImages {
		j.bases = append(j.bases, builder.BaseImage{Name: b.Name, Digest: b.Digest})
	}
	if len(r.Grant) > 0 {
		json.Unmarshal(r.Grant, &j.Grant)
	}
	j.Grant.LimitTenant = r.LimitTenant
	if b, err := hex.DecodeString(r.ReadTokenSHA256); err == nil && len(b) == sha256.Size {
		j.readTokenSHA256 = [sha256.Size]byte(b)
	}
	if r.Status.Final() {
		close(j.done)
	}
	return j
}

// ReadTokenMatches reports, in constant time, whether sum is the sha256
// of this build's read token. A build without one matches nothing.
func (j *Job) ReadTokenMatches(sum [sha256.Size]byte) bool {
	j.mu.Lock()
	want := j.readTokenSHA256
	j.mu.Unlock()
	return want != [sha256.Size]byte{} && subtle.ConstantTimeCompare(want[:], sum[:]) == 1
}

func readTokenHex(sum [sha256.Size]byte) string {
	if sum == [sha256.Size]byte{} {
		return ""
	}
	return hex.EncodeToString(sum[:])
}

// interrupted reports whether the job ended because a gateway restart
// stopped it.
func (j *Job) interrupted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.status == api.StatusFailed && strings.HasPrefix(j.err, api.ErrRestarted)
}

// BaseImages returns the images the build pulled, as the gateway resolved
// them before it ran; nil until then.
func (j *Job) BaseImages() []builder.BaseImage {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.bases
}

func (j *Job) setBaseImages(b []builder.BaseImage) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.bases, j.statusJSON = b, nil
}

func apiBaseImages(bs []builder.BaseImage) []api.BaseImage {
	var out []api.BaseImage
	for _, b := range bs {
		out = append(out, api.BaseImage{Name: b.Name, Digest: b.Digest})
	}
	return out
}

// limitKey is whose limits and queue turns the build counts against: its
// granted tenant, else its owner.
func (j *Job) limitKey() string { return limitKey(j.Owner, j.Grant.LimitTenant) }

// limitKey is the key of the limits of owner's build granted tenant; the
// shared store counts by the same rule.
func limitKey(owner, tenant string) string {
	if tenant != "" {
		return tenant
	}
	return owner
}

// Tenant is whose layer and result caches the job's build uses: as the
// authorization granted (the policy's cache.scope), else the owner's own,
// which never crosses identities; "" for none.
func (j *Job) Tenant() string {
	switch {
	case j.Grant.NoCache:
		return ""
	case j.Grant.CacheTenant != "":
		return j.Grant.CacheTenant
	}
	return "owner:" + j.Owner
}

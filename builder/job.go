package builder

import (
	"context"
	"sync"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
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

	mu       sync.Mutex
	bases    []BaseImage
	status   api.Status
	digest   string
	err      string
	created  time.Time
	started  time.Time
	finished time.Time
	cancel   context.CancelCauseFunc // set while running
	// cancelRequested is set by a Cancel that came after a worker took the
	// job off the queue but before it started it.
	cancelRequested bool
	done            chan struct{} // closed when the job reaches a final state
}

// Snapshot returns the job's state as the API reports it.
func (j *Job) Snapshot() api.Build {
	j.mu.Lock()
	defer j.mu.Unlock()
	b := api.Build{
		ID:           j.ID,
		Status:       j.status,
		Digest:       j.digest,
		Destinations: append([]string(nil), j.Spec.Destinations...),
		Runner:       j.Spec.Runner,
		Error:        j.err,
		CreatedAt:    j.created,
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
	j.status = s
	if s == api.StatusRunning {
		j.started = now
	}
	return true
}

// finish ends the job. The first final state wins.
func (j *Job) finish(s api.Status, digest, errMsg string, now time.Time) bool {
	j.mu.Lock()
	if j.status.Final() {
		j.mu.Unlock()
		return false
	}
	j.status, j.digest, j.err, j.finished = s, digest, errMsg, now
	j.cancel = nil
	j.mu.Unlock()
	close(j.done)
	return true
}

// BaseImages returns the images the build pulled, as the gateway resolved
// them before it ran; nil until then.
func (j *Job) BaseImages() []BaseImage {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.bases
}

func (j *Job) setBaseImages(b []BaseImage) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.bases = b
}

// Tenant is whose layer cache the job's build uses: the identity's
// namespace_path (a CI project's group) if it has one, else the owner.
func (j *Job) Tenant() string {
	if ns := j.Identity.Attributes["namespace_path"]; ns != "" {
		return "namespace_path:" + ns
	}
	return "owner:" + j.Owner
}

// Replicas: with a SharedStore, gateways that share it serve one queue
// (docs/replication.md). A build is accepted by any replica, stored with
// its context, claimed by whichever replica has a free slot, and seen,
// followed and cancelled from any of them.

package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/jobs/store"
)

// Leases are what tells live replicas from dead ones.
type Leases interface {
	// Register starts replica's lease; Renew extends it, or returns
	// store.ErrLeaseLost once another replica has taken it over.
	Register(ctx context.Context, replica string, lease time.Duration) error
	Renew(ctx context.Context, replica string, lease time.Duration) error
	// Leave ends replica's lease at once.
	Leave(ctx context.Context, replica string) error
	// Takeover queues again the unfinished builds of the replicas whose
	// lease expired, after requeue has changed each (and cleaned up after
	// it), and returns them.
	Takeover(ctx context.Context, requeue func(ctx context.Context, r *store.Record) (logLine []byte)) ([]*store.Record, error)
}

// SharedQueue is the queue replicas serve together.
type SharedQueue interface {
	// Create stores a new accepted build with its context archive.
	Create(ctx context.Context, r *store.Record, archive io.Reader) error
	// Claim takes the next queued build for replica, with the attempt that
	// fences its writes; nil if none waits whose tenant (its LimitTenant, else
	// its Owner) may start one more. The tenant's builds held by any
	// replica count against the least of ownerLimit (0: none) and its
	// grant's MaxConcurrent.
	Claim(ctx context.Context, replica string, ownerLimit int) (r *store.Record, attempt int, cancelRequested bool, err error)
	// PutHeld writes a build replica holds, or returns store.ErrNotHeld.
	PutHeld(r *store.Record, replica string, attempt int) error
	// Release puts a held build back in the queue.
	Release(ctx context.Context, r *store.Record, replica string, attempt int) error
	// CancelQueued ends, with f, a build that is queued and unclaimed,
	// adding the line f returns to its log.
	CancelQueued(ctx context.Context, id string, f func(r *store.Record) (logLine []byte)) (bool, error)
	// RequestCancel asks the holder of a build to cancel it;
	// CancelRequested returns which of replica's builds were asked.
	RequestCancel(ctx context.Context, id string) error
	CancelRequested(ctx context.Context, replica string, ids []string) ([]string, error)
	// Queued counts the waiting builds, in all and of tenant: a record's
	// LimitTenant, else its Owner.
	Queued(ctx context.Context, tenant string) (total, ofTenant int, err error)
	// Listen calls queue when builds are queued and cancel when a cancel
	// is requested, until ctx ends.
	Listen(ctx context.Context, queue func(), cancel func(id string))
}

// SharedStore is a Store that replicas share (jobs/pgstore). Given one
// (WithStore), the Manager serves one queue with the other replicas:
// contexts and logs are kept in it, not in the state directory.
type SharedStore interface {
	Store
	Leases
	SharedQueue
	Context(ctx context.Context, id string) io.Reader
	DeleteContext(ctx context.Context, id string) error
	AppendLog(ctx context.Context, id string, p []byte) error
	ReadLog(ctx context.Context, id string, offset int64, max int) ([]byte, error)
	SetReadToken(ctx context.Context, id, sum string) error
	Owned(ctx context.Context, owner string) ([]*store.Record, error)
	Expire(ctx context.Context, cutoff time.Time) (int, error)
}

// WithReplica names this gateway among the replicas sharing a store and
// sets its lease: a replica that has not renewed it for lease is taken
// for dead and its builds are run again by the others. Default: a random
// name and 15s.
func WithReplica(name string, lease time.Duration) Option {
	return func(o *options) error {
		if name == "" || lease < time.Second {
			return fmt.Errorf("replica needs a name and a lease of at least 1s, got %q and %s", name, lease)
		}
		o.replica, o.lease = name, lease
		return nil
	}
}

// uploadPrefix names the copies of uploads kept in the state directory
// until they are stored.
const uploadPrefix = ".upload-"

var errLost = errors.New("another replica took the build over")

// logPoll paces log followers and claimPoll idle workers, between
// notifications.
const (
	logPoll   = 250 * time.Millisecond
	claimPoll = time.Second
)

func newReplicaName() string {
	var b [6]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	return host + "-" + hex.EncodeToString(b[:])
}

// storeCtx bounds a call to the shared store made on behalf of no
// request, or of one whose end must not interrupt it.
func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// recoverLocal cleans up what a previous run on this state directory
// left: its builds are in the shared store, run again by whoever claims
// them, so every sandbox and workspace here goes.
func (m *Manager) recoverLocal() error {
	m.reapLeftovers(nil)
	if _, err := m.removeWorkspacesBut(nil); err != nil {
		return err
	}
	// Logs of held builds and copies of uploads: what they held is in the
	// shared store, or was never accepted.
	logs, _ := filepath.Glob(filepath.Join(m.layout.Logs, "*.log*"))
	uploads, _ := filepath.Glob(filepath.Join(m.layout.Root, uploadPrefix+"*"))
	for _, l := range append(logs, uploads...) {
		os.Remove(l)
	}
	ctx, cancel := storeCtx()
	defer cancel()
	if err := m.shared.Register(ctx, m.o.replica, m.o.lease); err != nil {
		return err
	}
	m.o.logger.Info("serving the shared queue", "replica", m.o.replica, "lease", m.o.lease.String())
	return nil
}

// view is build r as any replica sees it: its log is read from the
// shared store.
func (m *Manager) view(r *store.Record) *Job {
	spec, err := Validate(r.Spec, m.o.runnerNames(), m.o.defaultRunner)
	if err != nil {
		spec = &ValidSpec{BuildSpec: r.Spec}
	}
	j := jobFromRecord(r, spec)
	id := r.ID
	j.Log = &Log{closed: true, changed: make(chan struct{}), remote: func(ctx context.Context, w io.Writer, offset int64, follow bool) error {
		return m.followShared(ctx, id, w, offset, follow)
	}}
	close(j.Log.changed)
	j.await = func(ctx context.Context) error { return m.awaitShared(ctx, j) }
	return j
}

// awaitShared polls the shared store until view j has ended there, then
// brings j up to date and closes its Done channel.
func (m *Manager) awaitShared(ctx context.Context, j *Job) error {
	for {
		r, err := m.store.Get(j.ID)
		if err == nil && r.Status.Final() {
			j.mu.Lock()
			j.status, j.digest, j.err, j.statusJSON = r.Status, r.Digest, r.Error, nil
			j.started, j.finished, j.transitions = r.StartedAt, r.FinishedAt, r.Transitions
			select {
			case <-j.done:
			default:
				close(j.done)
			}
			j.mu.Unlock()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(logPoll):
		}
	}
}

// followShared copies build id's stored log from offset to w; with
// follow until the build has ended, polling: its holder writes the final
// state only once the whole log is stored.
func (m *Manager) followShared(ctx context.Context, id string, w io.Writer, offset int64, follow bool) error {
	flush := func() {}
	if fl, ok := w.(interface{ Flush() }); ok {
		flush = fl.Flush
	}
	for {
		final := false
		if follow {
			r, err := m.store.Get(id)
			if err != nil {
				return err
			}
			final = r.Status.Final()
		}
		for {
			b, err := m.shared.ReadLog(ctx, id, offset, 1<<20)
			if err != nil {
				return err
			}
			if len(b) == 0 {
				break
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			offset += int64(len(b))
			flush()
		}
		if !follow || final {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(logPoll):
		}
	}
}

// sharedGet returns owner's build id from the shared store.
func (m *Manager) sharedGet(owner, id string) (*Job, error) {
	r, err := m.store.Get(id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && owner != "" && r.Owner != owner) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return m.view(r), nil
}

// sharedCancel cancels build j from any replica: a queued one at once, a
// running one by its holder.
func (m *Manager) sharedCancel(j *Job) (*Job, error) {
	if j.Status().Final() {
		return j, ErrFinished
	}
	m.mu.Lock()
	held := m.jobs[j.ID]
	m.mu.Unlock()
	if held != nil {
		return j, m.cancelHeld(held)
	}
	ctx, cancel := storeCtx()
	defer cancel()
	now := m.o.now()
	const msg = "cancelled before it started"
	var final *store.Record
	ok, err := m.shared.CancelQueued(ctx, j.ID, func(r *store.Record) []byte {
		r.Status, r.Error, r.FinishedAt = api.StatusCancelled, msg, now
		r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusCancelled, At: now, Reason: msg})
		final = r
		return []byte("#buildgw " + msg + "\n")
	})
	if err != nil {
		return nil, err
	}
	if ok {
		v := m.view(final)
		for _, o := range m.o.observers {
			o.Finished(v, v.Snapshot())
		}
		return v, nil
	}
	if err := m.shared.RequestCancel(ctx, j.ID); err != nil {
		return nil, err
	}
	return j, nil
}

// cancelHeld cancels j, a build this replica holds.
func (m *Manager) cancelHeld(j *Job) error {
	j.mu.Lock()
	final, cancel := j.status.Final(), j.cancel
	if !final && cancel == nil {
		j.cancelRequested = true
	}
	j.mu.Unlock()
	if final {
		return ErrFinished
	}
	if cancel != nil {
		cancel(errCancelled)
	}
	return nil
}

// claim blocks until this replica takes a build from the shared queue,
// or ctx ends.
func (m *Manager) claim(ctx context.Context) *Job {
	for {
		if ctx.Err() != nil {
			return nil
		}
		m.mu.Lock()
		wake := m.wake
		m.mu.Unlock()
		r, attempt, cancelled, err := m.shared.Claim(ctx, m.o.replica, m.o.ownerConcurrency)
		if err != nil && ctx.Err() == nil {
			m.o.logger.Error("claiming a build", "error", err)
		}
		if r != nil {
			// An earlier attempt of the same build may still be winding
			// down here (this replica lost its lease, was given the build
			// again): it ends first.
			m.mu.Lock()
			old := m.jobs[r.ID]
			m.mu.Unlock()
			if old != nil {
				old.mu.Lock()
				cancel := old.cancel
				old.cancelRequested = true
				old.mu.Unlock()
				if cancel != nil {
					cancel(errLost)
				}
				<-old.left
			}
			j := m.adopt(r, attempt)
			j.cancelRequested = cancelled
			return j
		}
		select {
		case <-wake:
		case <-time.After(claimPoll):
		case <-ctx.Done():
			return nil
		}
	}
}

// adopt makes claimed build r a job of this replica: its log is written
// here and shipped to the shared store as it grows; its context is
// fetched when it runs.
func (m *Manager) adopt(r *store.Record, attempt int) *Job {
	spec, verr := Validate(r.Spec, m.o.runnerNames(), m.o.defaultRunner)
	if verr != nil {
		spec = &ValidSpec{BuildSpec: r.Spec}
	}
	j := jobFromRecord(r, spec)
	j.adoptErr = verr
	j.attempt = attempt
	j.workspace = ""
	path := m.layout.Log(r.ID)
	os.Remove(path)
	os.Remove(path + tailSuffix)
	lg, lerr := newLog(path, m.o.logMax)
	if lerr != nil {
		// The build still runs; its log is not kept.
		m.o.logger.Error("creating build log", "job", r.ID, "error", lerr)
		lg = closedLog(os.DevNull)
	}
	j.Log = lg
	j.shipped, j.left = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(j.shipped)
		if err := lg.WriteTo(context.Background(), &logShipper{m: m, id: r.ID}, 0, true); err != nil {
			m.o.logger.Error("storing build log", "job", r.ID, "error", err)
		}
	}()
	if attempt > 1 {
		lg.Printf("running again on replica %s (attempt %d)", m.o.replica, attempt)
	}
	m.mu.Lock()
	m.jobs[j.ID] = j
	m.running++
	m.runningBy[j.limitKey()]++
	m.mu.Unlock()
	return j
}

// logShipper appends what a held build's log gets to the shared store.
type logShipper struct {
	m  *Manager
	id string
}

func (s *logShipper) Write(p []byte) (int, error) {
	ctx, cancel := storeCtx()
	defer cancel()
	if err := s.m.shared.AppendLog(ctx, s.id, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// fetchContext extracts held build j's stored context into a new
// workspace, under the same limits and checks as an upload.
func (m *Manager) fetchContext(ctx context.Context, j *Job) error {
	if j.adoptErr != nil {
		return j.adoptErr
	}
	limits := m.o.limits
	if g := j.Grant.MaxContextBytes; g > 0 && (limits.MaxBytes <= 0 || g < limits.MaxBytes) {
		limits.MaxBytes = g
	}
	// Accepted here a moment ago: its upload's workspace is being
	// removed.
	m.mu.Lock()
	accepting := m.accepting[j.ID]
	m.mu.Unlock()
	if accepting != nil {
		select {
		case <-accepting:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	ws, err := m.ws.Create(j.ID, limits)
	if err != nil {
		return fmt.Errorf("creating workspace: %w", err)
	}
	j.workspace = ws
	ctxDir := filepath.Join(ws, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		return fmt.Errorf("creating workspace: %w", err)
	}
	if err := m.chown(ws, ctxDir); err != nil {
		return err
	}
	var xopts []archive.Option
	if m.o.owner != nil {
		xopts = append(xopts, archive.WithOwner(m.o.owner.uid, m.o.owner.gid))
	}
	stats, err := archive.Extract(ctx, m.shared.Context(ctx, j.ID), ctxDir, limits, xopts...)
	if err != nil {
		return fmt.Errorf("extracting the stored context: %w", err)
	}
	if stats.SHA256 != j.ContextSHA256 {
		return fmt.Errorf("the stored context (sha256:%s) is not the one accepted (sha256:%s)", stats.SHA256, j.ContextSHA256)
	}
	if _, err := archive.ValidateDockerfile(ctxDir, j.Spec.Dockerfile); err != nil {
		return err
	}
	return nil
}

// saveHeld writes held build j, fenced: a replica that lost it writes
// nothing and stops it. A final state is written once the log is stored
// whole, and the stored context then goes.
func (m *Manager) saveHeld(j *Job) error {
	r := j.record()
	if r.Status.Final() && j.shipped != nil {
		<-j.shipped
	}
	r.LogPath, r.Workspace = "", ""
	err := m.shared.PutHeld(r, m.o.replica, j.attempt)
	if errors.Is(err, store.ErrNotHeld) {
		j.mu.Lock()
		cancel := j.cancel
		j.mu.Unlock()
		if cancel != nil {
			cancel(errLost)
		}
		return err
	}
	if err == nil && r.Status.Final() {
		ctx, cancel := storeCtx()
		defer cancel()
		if err := m.shared.DeleteContext(ctx, j.ID); err != nil {
			m.o.logger.Error("deleting stored context", "job", j.ID, "error", err)
		}
	}
	return err
}

// releaseHeld puts j, which this replica stopped without finishing it
// (it shuts down), back in the shared queue for another replica.
func (m *Manager) releaseHeld(j *Job, why string) {
	now := m.o.now()
	j.mu.Lock()
	j.status, j.statusJSON = api.StatusQueued, nil
	j.started = time.Time{}
	j.transitions = append(j.transitions, store.Transition{Status: api.StatusQueued, At: now, Reason: why})
	j.cancel = nil
	j.mu.Unlock()
	j.Log.Printf("%s", why)
	j.Log.Close()
	<-j.shipped
	r := j.record()
	r.LogPath, r.Workspace = "", ""
	ctx, cancel := storeCtx()
	defer cancel()
	if err := m.shared.Release(ctx, r, m.o.replica, j.attempt); err != nil {
		m.o.logger.Error("queueing a build again for another replica", "job", j.ID, "error", err)
	}
}

// dropHeld forgets j once it has ended or left this replica.
func (m *Manager) dropHeld(j *Job) {
	m.mu.Lock()
	if m.jobs[j.ID] == j {
		delete(m.jobs, j.ID)
	}
	m.mu.Unlock()
	os.Remove(m.layout.Log(j.ID))
}

// heartbeat renews this replica's lease, takes over the builds of dead
// replicas, acts on cancel requests a notification may have missed, and
// listens for new builds and cancels, until ctx ends.
func (m *Manager) heartbeat(ctx context.Context) {
	lctx, stop := context.WithCancel(ctx)
	listened := make(chan struct{})
	defer func() {
		stop()
		<-listened
	}()
	go func() {
		defer close(listened)
		m.shared.Listen(lctx, m.wakeWorkers, m.cancelNotified)
	}()
	t := time.NewTicker(m.o.lease / 3)
	defer t.Stop()
	lastRenew := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, m.o.lease/3)
		err := m.shared.Renew(rctx, m.o.replica, m.o.lease)
		switch {
		case err == nil:
			lastRenew = time.Now()
		case errors.Is(err, store.ErrLeaseLost) || time.Since(lastRenew) > m.o.lease:
			// Another replica has taken (or is about to take) this one's
			// builds: stop them, and serve again under a new lease.
			m.o.logger.Error("replica lease lost: stopping its builds, which other replicas run again", "error", err)
			m.stopHeld(errLost)
			if err := m.shared.Register(rctx, m.o.replica, m.o.lease); err == nil {
				lastRenew = time.Now()
			}
		default:
			m.o.logger.Warn("renewing replica lease", "error", err)
		}
		m.takeover(rctx)
		m.pollCancels(rctx)
		cancel()
	}
}

// cancelNotified acts on a cancel request for build id, if this replica
// holds it.
func (m *Manager) cancelNotified(id string) {
	m.mu.Lock()
	j := m.jobs[id]
	m.mu.Unlock()
	if j != nil {
		m.cancelHeld(j)
	}
}

func (m *Manager) wakeWorkers() {
	m.mu.Lock()
	close(m.wake)
	m.wake = make(chan struct{})
	m.mu.Unlock()
}

// stopHeld cancels every build this replica holds with cause.
func (m *Manager) stopHeld(cause error) {
	m.mu.Lock()
	var held []*Job
	for _, j := range m.jobs {
		held = append(held, j)
	}
	m.mu.Unlock()
	for _, j := range held {
		j.mu.Lock()
		cancel := j.cancel
		j.mu.Unlock()
		if cancel != nil {
			cancel(cause)
		}
	}
}

// takeover queues again the builds of replicas whose lease expired,
// first cleaning up what a runner can clean up from here (a Pod found by
// the build's ID).
func (m *Manager) takeover(ctx context.Context) {
	recs, err := m.shared.Takeover(ctx, func(ctx context.Context, r *store.Record) []byte {
		was := r.Status
		if c, ok := m.o.runners[r.Spec.Runner].(builder.Cleaner); ok && was != api.StatusQueued {
			if err := c.Cleanup(ctx, r.ID); err != nil {
				m.o.logger.Error("cleaning up after a build of a dead replica", "job", r.ID, "error", err)
			}
		}
		now := m.o.now()
		why := fmt.Sprintf("the replica holding the build stopped renewing its lease; queued again (was %s)", was)
		r.Status, r.StartedAt = api.StatusQueued, time.Time{}
		r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusQueued, At: now, Reason: why})
		return []byte("#buildgw " + why + "\n")
	})
	if err != nil {
		m.o.logger.Error("taking over dead replicas", "error", err)
		return
	}
	if len(recs) > 0 {
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		m.o.logger.Warn("queued again the builds of a replica whose lease expired", "jobs", ids)
	}
}

// pollCancels acts on the cancel requests of held builds.
func (m *Manager) pollCancels(ctx context.Context) {
	m.mu.Lock()
	var ids []string
	for id := range m.jobs {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	cancelled, err := m.shared.CancelRequested(ctx, m.o.replica, ids)
	if err != nil {
		m.o.logger.Warn("reading cancel requests", "error", err)
		return
	}
	for _, id := range cancelled {
		m.mu.Lock()
		j := m.jobs[id]
		m.mu.Unlock()
		if j != nil {
			m.cancelHeld(j)
		}
	}
}

// acceptShared stores accepted build j with its context archive (upload)
// in the shared store, where any replica claims it. Its workspace here
// goes: the replica that claims it extracts the stored archive again.
func (m *Manager) acceptShared(ctx context.Context, j *Job, upload *os.File, stats *archive.Stats) (*Job, error) {
	if _, err := upload.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("reading the upload: %w", err)
	}
	r := j.record()
	r.LogPath, r.Workspace = "", ""
	// Once stored, the build may be claimed at once, by this replica too
	// (fetchContext), before its workspace here is gone.
	done := make(chan struct{})
	m.mu.Lock()
	m.accepting[j.ID] = done
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.accepting, j.ID)
		m.mu.Unlock()
		close(done)
	}()
	sctx, cancel := storeCtx()
	defer cancel()
	if err := m.shared.Create(sctx, r, upload); err != nil {
		return nil, err // the caller removes the workspace
	}
	m.removeWorkspace(context.WithoutCancel(ctx), j.Spec.Runner, j.workspace)
	m.o.logger.Info("build accepted", "job", j.ID, "owner", j.Owner, "context_sha256", stats.SHA256,
		"context_files", stats.Files, "context_bytes", stats.Bytes, "dockerfile", j.Spec.Dockerfile,
		"destinations", j.Spec.Destinations, "build_args", slices.Sorted(maps.Keys(j.Spec.BuildArgs)), "runner", j.Spec.Runner, "replica", m.o.replica)
	line := fmt.Sprintf("#buildgw accepted: %d files, %d bytes, context sha256:%s\n", stats.Files, stats.Bytes, stats.SHA256)
	if err := m.shared.AppendLog(sctx, j.ID, []byte(line)); err != nil {
		m.o.logger.Error("storing build log", "job", j.ID, "error", err)
	}
	for _, o := range m.o.observers {
		o.Accepted(j, stats.Bytes)
	}
	return m.view(r), nil
}

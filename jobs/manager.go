package jobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/workspace"
)

// ErrNotFound is returned for an unknown build ID, or one that belongs to
// another identity.
var ErrNotFound = errors.New("build not found")

// ErrFinished is returned when cancelling a build that has already ended.
var ErrFinished = errors.New("build has already finished")

// Manager accepts builds, queues them and runs them on runners, at most
// Concurrency at a time, in the order they were accepted.
type Manager struct {
	layout workspace.Layout
	ws     *workspace.Workspaces
	pusher Pusher
	o      options

	store Store
	// shared is store when replicas share it: then this Manager serves
	// one queue with them, and jobs holds only the builds it runs.
	shared SharedStore

	mu        sync.Mutex
	jobs      map[string]*Job
	queue     *fairQueue
	wake      chan struct{} // closed and replaced when the queue grows
	idem      map[idempotencyKey]*idemEntry
	running   int
	runningBy map[string]int // running builds per tenant (Job.limitKey)
	// pending counts submissions holding a queue slot while their context
	// is read, in all and by tenant (limitKey).
	pending   int
	pendingBy map[string]int
	// accepting are the builds this replica is storing in the shared
	// store, closed once their local workspace is gone: a claim of one
	// here waits, lest it make its workspace where the upload's still is.
	accepting map[string]chan struct{}
	// meanBuild is a moving average of build durations, for Retry-After.
	meanBuild time.Duration
}

// New returns a Manager that keeps its workspaces, logs and job store
// in the state directory laid out as l and pushes with p. It recovers the jobs a previous run
// left: finished ones stay queryable, queued ones whose context is intact
// are queued again, and the rest end as failed, their sandboxes killed
// and workspaces removed. Start its workers with Run; Close it after.
func New(l workspace.Layout, p Pusher, opts ...Option) (*Manager, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.Logs, 0o711); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	st := o.store
	if st == nil {
		if st, err = store.Open(l.JobStore); err != nil {
			return nil, err
		}
	}
	ws, err := workspace.New(l, workspace.WithMemory(o.memBytes), workspace.WithConcurrency(o.concurrency),
		workspace.WithMaxBytes(o.workspaceMax), workspace.WithLogger(o.logger))
	if err != nil {
		st.Close()
		return nil, err
	}
	m := &Manager{
		layout:    l,
		ws:        ws,
		pusher:    p,
		o:         o,
		store:     st,
		jobs:      map[string]*Job{},
		queue:     newFairQueue(),
		wake:      make(chan struct{}),
		idem:      map[idempotencyKey]*idemEntry{},
		runningBy: map[string]int{},
		pendingBy: map[string]int{},
		accepting: map[string]chan struct{}{},
		meanBuild: 10 * time.Second,
	}
	if ss, ok := st.(SharedStore); ok {
		m.shared = ss
		if m.o.replica == "" {
			m.o.replica = newReplicaName()
		}
		err = m.recoverLocal()
	} else {
		err = m.recover()
	}
	if err != nil {
		m.Close() // the store, and the tmpfs if it was mounted above
		return nil, err
	}
	return m, nil
}

// Close closes the job store, and unmounts the workspaces' tmpfs unless
// queued builds are kept in it. Call it after Run has returned.
func (m *Manager) Close() error {
	m.ws.Close()
	return m.store.Close()
}

// DefaultRunner names the runner of specs that name none.
func (m *Manager) DefaultRunner() string { return m.o.defaultRunner }

// Runners returns the names of the configured runners.
func (m *Manager) Runners() map[string]builder.Runner { return m.o.runners }

// Stats returns how many builds wait in the queue and how many run.
func (m *Manager) Stats() (queued, running int) {
	if m.shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		queued, _, _ = m.shared.Queued(ctx, "")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return queued + m.queue.len(), m.running
}

// Get returns owner's build id.
func (m *Manager) Get(owner, id string) (*Job, error) {
	if m.shared != nil {
		return m.sharedGet(owner, id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok || j.Owner != owner {
		return nil, ErrNotFound
	}
	return j, nil
}

// GetByReadToken returns build id if sum is the sha256 of its read token.
func (m *Manager) GetByReadToken(id string, sum [sha256.Size]byte) (*Job, error) {
	if m.shared != nil {
		j, err := m.sharedGet("", id)
		if err != nil || !j.ReadTokenMatches(sum) {
			return nil, ErrNotFound
		}
		return j, nil
	}
	m.mu.Lock()
	j, ok := m.jobs[id]
	m.mu.Unlock()
	if !ok || !j.ReadTokenMatches(sum) {
		return nil, ErrNotFound
	}
	return j, nil
}

// setReadToken gives j a new read token, for a repeated submission: only
// the newest answer's token is valid, and it is recorded before it is
// handed out.
func (m *Manager) setReadToken(j *Job, sum [sha256.Size]byte) error {
	j.mu.Lock()
	j.readTokenSHA256 = sum
	j.mu.Unlock()
	if m.shared != nil {
		ctx, cancel := storeCtx()
		defer cancel()
		return m.shared.SetReadToken(ctx, j.ID, readTokenHex(sum))
	}
	return m.save(j)
}

// Ended reports whether build id, whoever owns it, has reached a final
// state; false for a build the Manager does not know.
func (m *Manager) Ended(id string) bool {
	if m.shared != nil {
		j, err := m.sharedGet("", id)
		return err == nil && j.Status().Final()
	}
	m.mu.Lock()
	j, ok := m.jobs[id]
	m.mu.Unlock()
	return ok && j.Status().Final()
}

// List returns owner's builds, newest first.
func (m *Manager) List(owner string) []*Job {
	if m.shared != nil {
		ctx, cancel := storeCtx()
		defer cancel()
		recs, err := m.shared.Owned(ctx, owner)
		if err != nil {
			m.o.logger.Error("listing builds", "error", err)
		}
		out := make([]*Job, 0, len(recs))
		for _, r := range recs {
			out = append(out, m.view(r))
		}
		return out
	}
	m.mu.Lock()
	var out []*Job
	for _, j := range m.jobs {
		if j.Owner == owner {
			out = append(out, j)
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(a, b int) bool {
		ca, cb := out[a].Snapshot().CreatedAt, out[b].Snapshot().CreatedAt
		if ca.Equal(cb) {
			return out[a].ID > out[b].ID
		}
		return ca.After(cb)
	})
	return out
}

// Cancel stops owner's build id: a queued build never starts, a running
// one has its sandbox killed.
func (m *Manager) Cancel(owner, id string) (*Job, error) {
	j, err := m.Get(owner, id)
	if err != nil {
		return nil, err
	}
	if m.shared != nil {
		return m.sharedCancel(j)
	}
	m.mu.Lock()
	if m.queue.remove(j) {
		m.mu.Unlock()
		// Only the Cancel that took it off the queue gets here.
		m.cancelUnstarted(j)
		return j, nil
	}
	m.mu.Unlock()

	j.mu.Lock()
	final, cancel := j.status.Final(), j.cancel
	if !final && cancel == nil {
		// A worker has taken the job off the queue but not started it yet:
		// have the worker cancel it instead of starting it.
		j.cancelRequested = true
	}
	j.mu.Unlock()
	if final {
		return j, ErrFinished
	}
	if cancel != nil {
		cancel(errCancelled)
	}
	return j, nil
}

// cancelUnstarted ends a job that never ran. Its workspace is gone and its
// log complete by the time it is reported final.
func (m *Manager) cancelUnstarted(j *Job) {
	j.Log.Printf("cancelled before it started")
	m.removeWorkspace(context.Background(), j.Spec.Runner, j.workspace)
	j.finish(api.StatusCancelled, "", "cancelled before it started", m.o.now(), m.finished(j))
	j.Log.Close()
	m.saveLogged(j)
}

// removeWorkspace discards ws: it goes to the trash at once, and the
// reaper removes it with runner's Remover.
func (m *Manager) removeWorkspace(ctx context.Context, runner, ws string) {
	if ws == "" {
		return // a held build that never fetched its context
	}
	m.ws.Discard(ctx, ws, m.remover(runner))
}

// remove removes ws now, with runner's Remover.
func (m *Manager) remove(ctx context.Context, runner, ws string) {
	if err := m.ws.Remove(ctx, ws, m.remover(runner)); err != nil {
		m.o.logger.Error("removing workspace", "dir", ws, "error", err)
	}
}

// remover is how runner's workspaces are removed: they may hold what
// only the runner knows how to take apart.
func (m *Manager) remover(runner string) workspace.RemoveFunc {
	if rm, ok := m.o.runners[runner].(builder.Remover); ok {
		return rm.RemoveAll
	}
	return nil
}

// Workspaces returns how many workspaces were made in memory and on disk
// since the Manager started: builds that went to disk while memory
// workspaces are on found the tmpfs too full (an undersized tmpfs shows
// there first).
func (m *Manager) Workspaces() (memory, disk int64) { return m.ws.Placed() }

// WorkspaceMemory returns the size and free bytes of the memory for
// workspaces (with a tmpfs per build: what is not reserved), or zeros
// when workspaces are on disk.
func (m *Manager) WorkspaceMemory() (size, free int64) { return m.ws.Memory() }

// finished returns what tells the observers of j's final state.
func (m *Manager) finished(j *Job) func(api.Build) {
	return func(b api.Build) {
		for _, o := range m.o.observers {
			o.Finished(j, b)
		}
	}
}

// Wait blocks until j is final or ctx ends.
func Wait(ctx context.Context, j *Job) error {
	if j.await != nil {
		select {
		case <-j.done:
			return nil
		default:
			return j.await(ctx)
		}
	}
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

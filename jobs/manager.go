package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/workspace"
)

// Pusher sends a built image to a registry with the gateway's own
// credentials. It tells logf, the build log, what it retries and why.
type Pusher interface {
	Push(ctx context.Context, img v1.Image, dst name.Tag, logf func(format string, args ...any)) error
}

// ErrNotFound is returned for an unknown build ID, or one that belongs to
// another identity.
var ErrNotFound = errors.New("build not found")

// ErrFinished is returned when cancelling a build that has already ended.
var ErrFinished = errors.New("build has already finished")

// SubmitRequest is an accepted upload's metadata.
type SubmitRequest struct {
	// Owner is the authenticated identity; only it sees the build.
	Owner string
	Spec  api.BuildSpec
	// IdempotencyKey, if set, makes a repeated submission by the same owner
	// return the first one's build.
	IdempotencyKey string
	// Identity is the caller in full, recorded with the job for auditing.
	Identity auth.Identity
	// Authorize, if set, decides whether the build may run.
	Authorize AuthorizeFunc
	// ReadTokenSHA256, if not zero, is the sha256 of the read token the
	// caller is given for the build: it replaces the build's earlier one
	// when the submission is a repeat.
	ReadTokenSHA256 [sha256.Size]byte
}

// Manager accepts builds, queues them and runs them on runners, at most
// Concurrency at a time, in the order they were accepted.
type Manager struct {
	layout workspace.Layout
	ws     *workspace.Workspaces
	pusher Pusher
	o      options

	store *store.Store

	mu        sync.Mutex
	jobs      map[string]*Job
	queue     *fairQueue
	wake      chan struct{} // closed and replaced when the queue grows
	idem      map[idempotencyKey]*idemEntry
	running   int
	runningBy map[string]int // running builds per owner
	// pending counts submissions holding a queue slot while their context
	// is read, in all and by owner.
	pending   int
	pendingBy map[string]int
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
	st, err := store.Open(l.JobStore)
	if err != nil {
		return nil, err
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
		meanBuild: 10 * time.Second,
	}
	if err := m.recover(); err != nil {
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

// Submit validates the spec, extracts the context archive read from r into
// a new workspace and queues the build. Nothing is queued unless all of it
// is valid; on error the workspace is gone again.
func (m *Manager) Submit(ctx context.Context, sr SubmitRequest, r io.Reader) (*Job, error) {
	spec, err := Validate(sr.Spec, m.o.runnerNames(), m.o.defaultRunner)
	if err != nil {
		return nil, err
	}
	// A runner this host cannot run (dockerd not installed, say) is
	// refused up front, not after the upload.
	if ch, ok := m.o.runners[spec.Runner].(builder.Checker); ok {
		if err := ch.Available(ctx); err != nil {
			return nil, &SpecError{"runner", fmt.Sprintf("%q is not available on this gateway: %v", spec.Runner, err)}
		}
	}

	if sr.IdempotencyKey != "" {
		return m.once(ctx, idempotencyKey{owner: sr.Owner, key: sr.IdempotencyKey}, sr.ReadTokenSHA256, func() (*Job, error) {
			return m.accept(ctx, sr, spec, r)
		})
	}
	return m.accept(ctx, sr, spec, r)
}

func (m *Manager) accept(ctx context.Context, sr SubmitRequest, spec *ValidSpec, r io.Reader) (_ *Job, err error) {
	owner := sr.Owner
	var grant Grant
	limits := m.o.limits
	if sr.Authorize != nil {
		// Refuse what the spec alone decides before reading any context.
		if grant, err = sr.Authorize(spec, nil, nil); err != nil {
			return nil, err
		}
		if grant.MaxContextBytes > 0 && (limits.MaxBytes <= 0 || grant.MaxContextBytes < limits.MaxBytes) {
			limits.MaxBytes = grant.MaxContextBytes
		}
	}
	if err := m.reserve(owner); err != nil {
		return nil, err
	}
	queued := false
	defer func() {
		if !queued {
			m.release(owner)
		}
	}()
	id, err := newID()
	if err != nil {
		return nil, err
	}
	ws, err := m.ws.Create(id, limits)
	if err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	defer func() {
		if err != nil {
			m.removeWorkspace(context.WithoutCancel(ctx), spec.Runner, ws)
		}
	}()
	ctxDir := filepath.Join(ws, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	if err := m.chown(ws, ctxDir); err != nil {
		return nil, err
	}
	var xopts []archive.Option
	if m.o.owner != nil {
		xopts = append(xopts, archive.WithOwner(m.o.owner.uid, m.o.owner.gid))
	}
	stats, err := archive.Extract(ctx, r, ctxDir, limits, xopts...)
	if err != nil {
		return nil, err
	}
	df, err := archive.ValidateDockerfile(ctxDir, spec.Dockerfile)
	if err != nil {
		return nil, err
	}
	spec.Dockerfile = df
	dfBytes, err := dockerfile.Read(ctxDir, df)
	if err != nil {
		return nil, err
	}
	dfSum := sha256.Sum256(dfBytes)
	// Parsed once, here: the policy, the base store and the runner all
	// read this analysis.
	analysis, err := analyzeDockerfile(dfBytes, spec)
	if err != nil {
		return nil, err
	}
	if sr.Authorize != nil {
		if grant, err = sr.Authorize(spec, dfBytes, analysis); err != nil {
			return nil, err
		}
	}

	lg, err := newLog(m.layout.Log(id), m.o.logMax)
	if err != nil {
		return nil, err
	}
	j := &Job{
		ID:               id,
		Owner:            owner,
		Identity:         sr.Identity,
		Grant:            grant,
		DockerfileSHA256: hex.EncodeToString(dfSum[:]),
		analysis:         analysis,
		Spec:             spec,
		ContextSHA256:    stats.SHA256,
		Log:              lg,
		workspace:        ws,
		idemKey:          sr.IdempotencyKey,
		readTokenSHA256:  sr.ReadTokenSHA256,
		status:           api.StatusQueued,
		created:          m.o.now(),
		done:             make(chan struct{}),
	}
	j.transitions = []store.Transition{{Status: api.StatusQueued, At: j.created}}
	// Accepted means recorded: the 202 goes out only once the job would
	// survive a crash of the gateway.
	if err := m.save(j); err != nil {
		lg.Close()
		os.Remove(lg.path)
		return nil, err
	}
	m.o.logger.Info("build accepted", "job", id, "owner", owner, "context_sha256", stats.SHA256,
		"context_files", stats.Files, "context_bytes", stats.Bytes, "dockerfile", spec.Dockerfile,
		"destinations", spec.Destinations, "build_args", slices.Sorted(maps.Keys(spec.BuildArgs)), "runner", spec.Runner)
	lg.Printf("accepted: %d files, %d bytes, context sha256:%s", stats.Files, stats.Bytes, stats.SHA256)

	m.mu.Lock()
	m.jobs[id] = j
	m.pending--
	if m.pendingBy[owner]--; m.pendingBy[owner] <= 0 {
		delete(m.pendingBy, owner)
	}
	queued = true
	m.queue.push(j)
	close(m.wake)
	m.wake = make(chan struct{})
	m.mu.Unlock()
	for _, o := range m.o.observers {
		o.Accepted(j, stats.Bytes)
	}
	return j, nil
}

func (m *Manager) chown(paths ...string) error {
	if m.o.owner == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, m.o.owner.uid, m.o.owner.gid); err != nil {
			return fmt.Errorf("handing workspace to the sandbox user: %w", err)
		}
	}
	return nil
}

// Stats returns how many builds wait in the queue and how many run.
func (m *Manager) Stats() (queued, running int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.queue.len(), m.running
}

// Get returns owner's build id.
func (m *Manager) Get(owner, id string) (*Job, error) {
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
	return m.save(j)
}

// Ended reports whether build id, whoever owns it, has reached a final
// state; false for a build the Manager does not know.
func (m *Manager) Ended(id string) bool {
	m.mu.Lock()
	j, ok := m.jobs[id]
	m.mu.Unlock()
	return ok && j.Status().Final()
}

// List returns owner's builds, newest first.
func (m *Manager) List(owner string) []*Job {
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

var errCancelled = errors.New("cancelled")

// Run runs queued builds until ctx ends, then waits for the running ones
// to stop.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	rctx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		m.ws.Reap(rctx, m.remover(m.o.defaultRunner))
	}()
	defer func() {
		stopReaper()
		<-reaped
	}()
	// Running builds outlive ctx by the grace period; then they are
	// cancelled with errShutdown.
	jobsCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(nil)
	workersDone := make(chan struct{})
	go func() {
		select {
		case <-workersDone:
			return
		case <-ctx.Done():
		}
		q, r := m.Stats()
		m.o.logger.Info("shutting down: waiting for running builds", "running", r, "queued_kept", q, "grace", m.o.shutdownGrace.String())
		t := time.NewTimer(m.o.shutdownGrace)
		defer t.Stop()
		select {
		case <-workersDone:
		case <-t.C:
			cancelJobs(errShutdown)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.janitor(ctx)
	}()
	var workers sync.WaitGroup
	for range m.o.concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for {
				j := m.next(ctx)
				if j == nil {
					return
				}
				m.run(jobsCtx, j)
			}
		}()
	}
	workers.Wait()
	close(workersDone)
	wg.Wait()
	return nil
}

var errShutdown = errors.New("gateway shut down")

// next blocks until a job may start or ctx ends. Owners take turns; each
// owner's jobs start in the order they were accepted, and an owner that
// already runs as many builds as it may waits without holding up the
// others.
func (m *Manager) next(ctx context.Context) *Job {
	for {
		if ctx.Err() != nil {
			return nil
		}
		m.mu.Lock()
		if j := m.queue.pop(m.mayStart); j != nil {
			m.running++
			m.runningBy[j.Owner]++
			m.mu.Unlock()
			return j
		}
		wake := m.wake
		m.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

func (m *Manager) run(ctx context.Context, j *Job) {
	// The slot is given back before the final state is reported, so that
	// whoever sees the state also sees the build no longer running.
	release := sync.OnceFunc(func() {
		m.mu.Lock()
		m.running--
		if m.runningBy[j.Owner]--; m.runningBy[j.Owner] == 0 {
			delete(m.runningBy, j.Owner)
		}
		// A waiting job of the same owner may start now.
		close(m.wake)
		m.wake = make(chan struct{})
		m.mu.Unlock()
	})
	defer release()
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeout := m.o.jobTimeout
	if j.Grant.Timeout > 0 && j.Grant.Timeout < timeout {
		timeout = j.Grant.Timeout
	}
	jctx, cancelTimeout := context.WithTimeoutCause(jctx, timeout, errTimeout)
	defer cancelTimeout()

	j.mu.Lock()
	if j.status.Final() {
		j.mu.Unlock()
		return
	}
	if j.cancelRequested {
		j.mu.Unlock()
		m.cancelUnstarted(j)
		return
	}
	j.status, j.started, j.cancel, j.statusJSON = api.StatusRunning, m.o.now(), cancel, nil
	j.transitions = append(j.transitions, store.Transition{Status: api.StatusRunning, At: j.started})
	j.mu.Unlock()
	m.saveLogged(j)

	log := m.o.logger.With("job", j.ID, "owner", j.Owner)
	log.Info("build started", "runner", j.Spec.Runner)
	wctx, stopWatch := context.WithCancel(jctx)
	peak := make(chan int64, 1)
	go func() { peak <- m.watchDisk(wctx, j, cancel) }()
	digest, err := m.build(jctx, j)
	stopWatch()
	wsPeak := <-peak
	if err != nil && jctx.Err() == nil {
		// The kernel stopped a writer (ENOSPC) before the watcher did:
		// say so rather than how the runner failed.
		if de := m.diskCause(j, wsPeak); de != nil {
			j.Log.Printf("%s", err)
			cancel(de)
		}
	}
	var diskErr *DiskError
	var status api.Status
	var msg string
	switch {
	case err == nil:
		status = api.StatusSucceeded
		j.Log.Printf("pushed %s", digest)
	case errors.Is(context.Cause(jctx), errCancelled):
		status, msg = api.StatusCancelled, "cancelled"
		j.Log.Printf("cancelled")
	case errors.Is(context.Cause(jctx), errTimeout):
		status, msg = api.StatusFailed, fmt.Sprintf("timeout: the build ran longer than %s", timeout)
		j.Log.Printf("%s", msg)
	case errors.As(context.Cause(jctx), &diskErr):
		status, msg = api.StatusFailed, diskErr.Error()
		j.Log.Printf("failed: %s", msg)
	case errors.Is(context.Cause(jctx), errShutdown):
		// Interrupted, not cancelled: its client may submit it again, as
		// after a crash (api.Build.Interrupted).
		status, msg = api.StatusFailed, fmt.Sprintf("%s: the gateway shut down and the build did not finish within the %s grace period", ErrRestarted, m.o.shutdownGrace)
		j.Log.Printf("%s", msg)
	default:
		status, msg = api.StatusFailed, err.Error()
		j.Log.Printf("failed: %v", err)
	}
	if status != api.StatusSucceeded {
		digest = ""
	}
	// Clean up before reporting the final state, so that whoever waits for
	// it finds the workspace gone and the log complete.
	m.removeWorkspace(context.WithoutCancel(ctx), j.Spec.Runner, j.workspace)
	release()
	j.finish(status, digest, msg, m.o.now(), m.finished(j))
	j.Log.Close()
	m.saveLogged(j)
	b := j.Snapshot()
	m.mu.Lock()
	m.meanBuild = (m.meanBuild*7 + b.FinishedAt.Sub(*b.StartedAt)) / 8
	m.mu.Unlock()
	log.Info("build finished", "status", b.Status, "digest", b.Digest, "error", b.Error,
		"duration", b.FinishedAt.Sub(*b.StartedAt).String(), "workspace_peak_bytes", wsPeak)
}

var errTimeout = errors.New("timeout")

func (m *Manager) build(ctx context.Context, j *Job) (string, error) {
	runner := m.o.runners[j.Spec.Runner]
	out := filepath.Join(j.workspace, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		return "", fmt.Errorf("creating output directory: %w", err)
	}
	if err := m.chown(out); err != nil {
		return "", err
	}
	analysis, err := j.analysisForBuild()
	if err != nil {
		return "", err
	}
	req := &builder.Request{
		ID:                 j.ID,
		Workspace:          j.workspace,
		ContextDir:         filepath.Join(j.workspace, "context"),
		Dockerfile:         j.Spec.Dockerfile,
		Analysis:           analysis,
		BuildArgs:          j.Spec.BuildArgs,
		Target:             j.Spec.Target,
		Labels:             j.Spec.Labels,
		OutputDir:          out,
		InsecureRegistries: m.o.insecure,
		ExtraCAs:           m.o.extraCAs,
		Network:            j.Grant.Network,
		Tenant:             j.Tenant(),
		NoCache:            j.Spec.NoCache,
	}
	if f := m.o.baseCheck; f != nil {
		req.CheckBase = func(image string, onbuild []string) error {
			return f(j.Identity, j.Spec, analysis, image, onbuild)
		}
	}
	if m.o.bases != nil {
		b, err := m.o.bases.Prepare(ctx, req, j.Log)
		if err != nil {
			return "", fmt.Errorf("fetching base images: %w", err)
		}
		req.BaseImages = b
		j.setBaseImages(b.Images)
		m.saveLogged(j)
	}
	img, err := runner.Build(ctx, req, j.Log)
	if err != nil {
		return "", err
	}
	if req.BaseImages != nil && req.BaseImages.Final != nil {
		img = annotateBase(img, *req.BaseImages.Final)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("reading built image: %w", err)
	}
	if j.setStatus(api.StatusPushing, m.o.now()) {
		m.saveLogged(j)
	}
	for _, t := range j.Spec.Tags {
		j.Log.Printf("pushing %s@%s", t, digest)
		start := time.Now()
		err := m.pusher.Push(ctx, img, t, j.Log.Printf)
		for _, o := range m.o.observers {
			if po, ok := o.(PushObserver); ok {
				po.Pushed(j, t.RegistryStr(), time.Since(start), err)
			}
		}
		if err != nil {
			return "", fmt.Errorf("pushing %s: %w", t, err)
		}
	}
	return digest.String(), nil
}

// annotateBase records in the image's manifest what it was built from, as
// the OCI image spec's pre-defined annotations say.
func annotateBase(img v1.Image, base builder.BaseImage) v1.Image {
	return mutate.Annotations(img, map[string]string{
		"org.opencontainers.image.base.name":   base.Name,
		"org.opencontainers.image.base.digest": base.Digest,
	}).(v1.Image)
}

// removeWorkspace discards ws: it goes to the trash at once, and the
// reaper removes it with runner's Remover.
func (m *Manager) removeWorkspace(ctx context.Context, runner, ws string) {
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

func newID() (string, error) {
	var b [15]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making build id: %w", err)
	}
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:])), nil
}

// Wait blocks until j is final or ctx ends.
func Wait(ctx context.Context, j *Job) error {
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

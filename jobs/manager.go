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
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs/store"
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
}

// Manager accepts builds, queues them and runs them on runners, at most
// Concurrency at a time, in the order they were accepted.
type Manager struct {
	stateDir string
	pusher   Pusher
	o        options

	store *store.Store

	mu        sync.Mutex
	jobs      map[string]*Job
	queue     *fairQueue
	wake      chan struct{} // closed and replaced when the queue grows
	idem      map[string]*idemEntry
	running   int
	runningBy map[string]int // running builds per owner
	// pending counts submissions holding a queue slot while their context
	// is read, in all and by owner.
	pending   int
	pendingBy map[string]int
	// meanBuild is a moving average of build durations, for Retry-After.
	meanBuild time.Duration

	// mounted is set when the Manager mounted the workspaces' tmpfs (and
	// so may unmount it).
	mounted bool
	// perBuild is set when each workspace in memory is a tmpfs of its
	// own; memReserved holds their sizes, by workspace (under mu).
	perBuild    bool
	memReserved map[string]int64

	trash   chan trashItem // workspaces for the reaper to remove
	reaping atomic.Bool    // whether a reaper runs (Run was called)
	// placed counts new workspaces: [0] in memory, [1] on disk.
	placed [2]atomic.Int64
}

type idemEntry struct {
	done chan struct{}
	job  *Job // nil if the first attempt failed
}

// New returns a Manager that keeps its workspaces, logs and job store
// under stateDir and pushes with p. It recovers the jobs a previous run
// left: finished ones stay queryable, queued ones whose context is intact
// are queued again, and the rest end as failed, their sandboxes killed
// and workspaces removed. Start its workers with Run; Close it after.
func New(stateDir string, p Pusher, opts ...Option) (*Manager, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"jobs", "logs", "trash"} {
		if err := os.MkdirAll(filepath.Join(stateDir, d), 0o711); err != nil {
			return nil, fmt.Errorf("creating state directory: %w", err)
		}
	}
	st, err := store.Open(filepath.Join(stateDir, "jobs.db"))
	if err != nil {
		return nil, err
	}
	m := &Manager{
		stateDir:  stateDir,
		pusher:    p,
		o:         o,
		store:     st,
		jobs:      map[string]*Job{},
		queue:     newFairQueue(),
		wake:      make(chan struct{}),
		idem:      map[string]*idemEntry{},
		runningBy: map[string]int{},
		pendingBy: map[string]int{},
		meanBuild: 10 * time.Second,
		trash:     make(chan trashItem, 256),

		memReserved: map[string]int64{},
	}
	if o.memBytes > 0 {
		if err := m.mountMemory(); err != nil {
			st.Close()
			return nil, err
		}
	}
	if err := m.recover(); err != nil {
		st.Close()
		return nil, err
	}
	return m, nil
}

// Close closes the job store, and unmounts the workspaces' tmpfs unless
// queued builds are kept in it. Call it after Run has returned.
func (m *Manager) Close() error {
	m.unmountMemory()
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
	var names []string
	for n := range m.o.runners {
		names = append(names, n)
	}
	spec, err := Validate(sr.Spec, names, m.o.defaultRunner)
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
		key := sr.Owner + "\x00" + sr.IdempotencyKey
		for {
			m.mu.Lock()
			e, ok := m.idem[key]
			if !ok {
				e = &idemEntry{done: make(chan struct{})}
				m.idem[key] = e
				m.mu.Unlock()
				job, err := m.accept(ctx, sr, spec, r)
				m.mu.Lock()
				e.job = job
				if err != nil {
					delete(m.idem, key) // let a retry try again
				}
				close(e.done)
				m.mu.Unlock()
				return job, err
			}
			m.mu.Unlock()
			// The same submission is already in flight (a client retry racing
			// its first attempt): wait for it instead of building twice.
			select {
			case <-e.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if e.job != nil {
				return e.job, nil
			}
		}
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
	ws, err := m.newWorkspace(id, limits)
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

	lg, err := newLog(filepath.Join(m.stateDir, "logs", id+".log"), m.o.logMax)
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
	m.reaping.Store(true)
	go func() {
		defer close(reaped)
		m.reap(rctx)
	}()
	defer func() {
		m.reaping.Store(false)
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
		status, msg = api.StatusCancelled, fmt.Sprintf("cancelled: the gateway shut down and the build did not finish within the %s grace period", m.o.shutdownGrace)
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

// removeWorkspace takes ws out of the jobs directory at once, with one
// rename into the trash, and leaves the slow part (unlinking an unpacked
// base image takes about a second) to the reaper, so that a build is
// reported as soon as it is over. Without a reaper (Run not started) it
// removes in place.
func (m *Manager) removeWorkspace(ctx context.Context, runner, ws string) {
	if _, ok := m.ownTmpfs(ws); ok {
		m.remove(ctx, runner, ws) // an unmount
		return
	}
	trash := filepath.Join(m.trashDir(ws), filepath.Base(ws))
	if m.reaping.Load() && os.Rename(ws, trash) == nil {
		select {
		case m.trash <- trashItem{runner, trash}:
			return
		default:
			ws = trash // the reaper is behind: remove here
		}
	}
	m.remove(ctx, runner, ws)
}

type trashItem struct{ runner, dir string }

// reap removes trashed workspaces until ctx ends, then what is left.
// Workspaces trashed before a restart are removed first.
func (m *Manager) reap(ctx context.Context) {
	for _, dir := range m.trashDirs() {
		if ents, err := os.ReadDir(dir); err == nil {
			for _, e := range ents {
				m.remove(ctx, m.o.defaultRunner, filepath.Join(dir, e.Name()))
			}
		}
	}
	for {
		select {
		case it := <-m.trash:
			m.remove(context.WithoutCancel(ctx), it.runner, it.dir)
		case <-ctx.Done():
			for {
				select {
				case it := <-m.trash:
					m.remove(context.WithoutCancel(ctx), it.runner, it.dir)
				default:
					return
				}
			}
		}
	}
}

func (m *Manager) remove(ctx context.Context, runner, ws string) {
	if m.perBuild && m.inMemory(ws) {
		// Its own tmpfs goes with everything in it (EINVAL: none).
		if err := unix.Unmount(ws, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			m.o.logger.Error("unmounting workspace", "dir", ws, "error", err)
		}
		defer m.releaseMemory(ws)
	}
	// os.RemoveAll holds a descriptor and a buffer per level: a tree a
	// RUN step made deep on purpose would take the gateway's descriptors
	// and memory. Lift what is deeper up first.
	if err := flattenTree(ws, flattenDepth); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.o.logger.Warn("flattening workspace before removing it", "dir", ws, "error", err)
	}
	var err error
	if rm, ok := m.o.runners[runner].(builder.Remover); ok {
		err = rm.RemoveAll(ctx, ws)
	} else {
		err = os.RemoveAll(ws)
	}
	if err != nil {
		m.o.logger.Error("removing workspace", "dir", ws, "error", err)
	}
}

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

package jobs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/push"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/workspace"
)

// restartable makes Managers on one state directory, one after the
// other, as a gateway restarted in place does.
type restartable struct {
	dir, reg string
	l        workspace.Layout
	base     []jobs.Option
}

func newRestartable(t *testing.T, kopts ...kaniko.Option) *restartable {
	t.Helper()
	testenv.RequireSandbox(t)
	kr, err := kaniko.New(append([]kaniko.Option{kaniko.WithExecutor(testenv.Executor(t))}, kopts...)...)
	if err != nil {
		t.Fatal(err)
	}
	bases, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &restartable{dir: testenv.StateDir(t), reg: testenv.Registry(t)}
	r.l = workspace.NewLayout(r.dir)
	r.base = []jobs.Option{jobs.WithRunner("kaniko", kr), jobs.WithInsecureRegistries(r.reg), jobs.WithBaseImages(bases)}
	if uid, gid, differs := kr.Owner(); differs {
		r.base = append(r.base, jobs.WithWorkspaceOwner(uid, gid))
	}
	return r
}

// start returns a Manager and, if run, its workers; stop shuts it down
// the way SIGTERM does and closes it.
func (r *restartable) start(t *testing.T, run bool, opts ...jobs.Option) (m *jobs.Manager, stop func()) {
	t.Helper()
	p, err := push.New(nil, push.WithRetry(2, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	m, err = jobs.New(r.l, p, append(append([]jobs.Option{}, r.base...), opts...)...)
	if err != nil {
		t.Fatalf("jobs.New = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if run {
			m.Run(ctx)
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		m.Close()
	}
	t.Cleanup(stop)
	return m, stop
}

func submitTo(t *testing.T, m *jobs.Manager, owner, key string, spec api.BuildSpec, ctxArchive []byte) *jobs.Job {
	t.Helper()
	j, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: owner, Spec: spec, IdempotencyKey: key}, bytes.NewReader(ctxArchive))
	if err != nil {
		t.Fatalf("Submit(%q) = %v, want no error", spec.Destinations, err)
	}
	return j
}

func TestManagerRestart(t *testing.T) {
	r := newRestartable(t)
	base := testenv.Busybox(t, r.reg)
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }

	m1, stop1 := r.start(t, true, jobs.WithConcurrency(1), jobs.WithShutdownGrace(500*time.Millisecond))
	done := submitTo(t, m1, "alice", "", api.BuildSpec{Destinations: []string{dest("done")}}, scratchContext(t, "d"))
	if b := wait(t, done, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("first build = %v %q, want succeeded", b.Status, b.Error)
	}
	long := submitTo(t, m1, "alice", "", api.BuildSpec{Destinations: []string{dest("long")}}, busyboxContext(t, base, "sleep 300"))
	waitLog(t, long, "Running: [/bin/sh -c sleep 300]", time.Minute)
	queued := submitTo(t, m1, "bob", "key-1", api.BuildSpec{Destinations: []string{dest("queued")}}, scratchContext(t, "q"))

	// SIGTERM: the running build gets the grace period, then is stopped as
	// interrupted (its client may submit it again) with the reason
	// recorded; the queued one is kept for the next start.
	stop1()
	if b := long.Snapshot(); !b.Interrupted() || !strings.Contains(b.Error, "grace period") {
		t.Errorf("running build after shutdown = %v %q, want interrupted with the grace period named", b.Status, b.Error)
	}
	if got := queued.Status(); got != api.StatusQueued {
		t.Errorf("queued build after shutdown = %v, want still queued", got)
	}

	// Make it look as if a gateway had died hard mid-build: a record left
	// running, its workspace, and a process still working in it.
	st, err := store.Open(r.l.JobStore)
	if err != nil {
		t.Fatal(err)
	}
	crashed := *mustGet(t, st, done.ID)
	crashed.ID, crashed.Status, crashed.Digest, crashed.FinishedAt = "crashedjob", api.StatusRunning, "", time.Time{}
	crashed.Workspace = filepath.Join(r.l.Jobs, "crashedjob")
	crashed.LogPath = r.l.Log("crashedjob")
	if err := st.Put(&crashed); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.MkdirAll(filepath.Join(crashed.Workspace, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("sleep", "300")
	orphan.Dir = filepath.Join(crashed.Workspace, "root")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	orphanDone := make(chan error, 1)
	go func() { orphanDone <- orphan.Wait() }()
	defer orphan.Process.Kill()

	bases := long.Snapshot().BaseImages
	if len(bases) != 1 || bases[0].Name != base || !strings.HasPrefix(bases[0].Digest, "sha256:") {
		t.Errorf("base images of the running build = %+v, want %s and its digest", bases, base)
	}

	o := &seenObserver{seen: map[string][2]api.Status{}}
	m2, _ := r.start(t, true, jobs.WithConcurrency(1), jobs.WithObserver(o))
	// The observers (the audit log) hear of the interrupted build's end.
	o.mu.Lock()
	if got := o.seen["crashedjob"]; got[0] != api.StatusFailed {
		t.Errorf("observer heard of the interrupted build's end as %q, want %v", got[0], api.StatusFailed)
	}
	o.mu.Unlock()
	// What a build started from is on record after the restart.
	if j, err := m2.Get("alice", long.ID); err != nil || !reflect.DeepEqual(j.Snapshot().BaseImages, bases) {
		t.Errorf("base images of %s after restart = %+v (%v), want %+v", long.ID, j.Snapshot().BaseImages, err, bases)
	}
	select {
	case <-orphanDone:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Errorf("process working in a dead job's workspace survived the restart")
	}
	if _, err := os.Stat(crashed.Workspace); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace of the interrupted job: Stat = %v, want it gone", err)
	}
	tests := []struct {
		id, owner  string
		wantStatus api.Status
		wantError  string
		wantLog    string
	}{
		{done.ID, "alice", api.StatusSucceeded, "", "#buildgw pushed sha256:"},
		{long.ID, "alice", api.StatusFailed, "grace period", "#buildgw " + jobs.ErrRestarted.Error() + ": the gateway shut down"},
		{"crashedjob", "alice", api.StatusFailed, jobs.ErrRestarted.Error(), "#buildgw " + jobs.ErrRestarted.Error()},
		{queued.ID, "bob", api.StatusSucceeded, "", "#buildgw queued again after a gateway restart"},
	}
	for _, tc := range tests {
		j, err := m2.Get(tc.owner, tc.id)
		if err != nil {
			t.Errorf("Get(%s) after restart = %v", tc.id, err)
			continue
		}
		b := wait(t, j, time.Minute)
		if b.Status != tc.wantStatus || !strings.Contains(b.Error, tc.wantError) {
			t.Errorf("job %s after restart = %v %q, want %v %q", tc.id, b.Status, b.Error, tc.wantStatus, tc.wantError)
		}
		if log := logOf(t, j); !strings.Contains(log, tc.wantLog) {
			t.Errorf("log of %s after restart lacks %q:\n%s", tc.id, tc.wantLog, log)
		}
	}
	if b := mustJob(t, m2, "alice", done.ID).Snapshot(); b.Digest != done.Snapshot().Digest || b.StartedAt == nil {
		t.Errorf("finished build after restart = %+v, want digest %s and its timestamps", b, done.Snapshot().Digest)
	}
	if got := registryDigest(t, dest("queued")); got != mustJob(t, m2, "bob", queued.ID).Snapshot().Digest {
		t.Errorf("requeued build pushed %s, want its recorded digest", got)
	}
	// The idempotency key outlives the restart: a retry gets the same build.
	again := submitTo(t, m2, "bob", "key-1", api.BuildSpec{Destinations: []string{dest("queued")}}, scratchContext(t, "q"))
	if again.ID != queued.ID {
		t.Errorf("Submit with key-1 after restart = job %s, want %s", again.ID, queued.ID)
	}
	if ws, _ := os.ReadDir(r.l.Jobs); len(ws) != 0 {
		t.Errorf("workspaces left after restart: %d, want none", len(ws))
	}
}

func mustGet(t *testing.T, st *store.Store, id string) *store.Record {
	t.Helper()
	rec, err := st.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func mustJob(t *testing.T, m *jobs.Manager, owner, id string) *jobs.Job {
	t.Helper()
	j, err := m.Get(owner, id)
	if err != nil {
		t.Fatalf("Get(%s) = %v", id, err)
	}
	return j
}

func TestManagerQueueFull(t *testing.T) {
	r := newRestartable(t)
	// No workers: everything accepted stays queued.
	m, _ := r.start(t, false, jobs.WithMaxQueued(2, 1))
	ctxArchive := scratchContext(t, "x")
	spec := api.BuildSpec{Destinations: []string{r.reg + "/test/full:v1"}}
	try := func(owner string) (*jobs.Job, error) {
		return m.Submit(context.Background(), jobs.SubmitRequest{Owner: owner, Spec: spec}, bytes.NewReader(ctxArchive))
	}
	a1, err := try("alice")
	if err != nil {
		t.Fatalf("first Submit(alice) = %v", err)
	}
	var qf *jobs.QueueFullError
	if _, err := try("alice"); !errors.As(err, &qf) || !qf.PerOwner || qf.RetryAfter < time.Second {
		t.Errorf("second Submit(alice) = %v, want a per-identity QueueFullError with a Retry-After", err)
	}
	if _, err := try("bob"); err != nil {
		t.Fatalf("Submit(bob) = %v, want accepted", err)
	}
	if _, err := try("carol"); !errors.As(err, &qf) || qf.PerOwner || qf.Limit != 2 {
		t.Errorf("Submit(carol) with 2 queued = %v, want the global QueueFullError", err)
	}
	if _, err := m.Cancel("alice", a1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := try("carol"); err != nil {
		t.Errorf("Submit(carol) after a cancel freed a slot = %v, want accepted", err)
	}
	if q, _ := m.Stats(); q != 2 {
		t.Errorf("queued = %d, want 2", q)
	}
	// A refused submission leaves no workspace behind.
	if ws, _ := os.ReadDir(r.l.Jobs); len(ws) != 2 {
		t.Errorf("workspaces = %d, want 2 (the queued builds')", len(ws))
	}
}

// TestManagerTenantQueue: the per-identity bounds on queued builds and
// uploads count a tenant's builds, from whichever of its identities (a
// GitLab identity per branch), and keep counting them after a restart;
// builds without a tenant count as their owner's.
func TestManagerTenantQueue(t *testing.T) {
	r := newRestartable(t)
	// No workers: everything accepted stays queued.
	m, stop := r.start(t, false, jobs.WithMaxQueued(0, 1))
	ctxArchive := scratchContext(t, "x")
	spec := api.BuildSpec{Destinations: []string{r.reg + "/test/tenant:v1"}}
	try := func(m *jobs.Manager, owner, tenant string) error {
		authorize := func(*jobs.ValidSpec, []byte, *dockerfile.Analysis) (jobs.Grant, error) {
			return jobs.Grant{LimitTenant: tenant}, nil
		}
		_, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: owner, Spec: spec, Authorize: authorize}, bytes.NewReader(ctxArchive))
		return err
	}
	var qf *jobs.QueueFullError
	if err := try(m, "gitlab:project_path:g/a:ref:b1", "project g/a"); err != nil {
		t.Fatalf("Submit(g/a branch b1) = %v, want accepted", err)
	}
	if err := try(m, "gitlab:project_path:g/a:ref:b2", "project g/a"); !errors.As(err, &qf) || !qf.PerOwner {
		t.Errorf("Submit(g/a branch b2) with b1 queued = %v, want the per-identity QueueFullError of the tenant", err)
	}
	if err := try(m, "gitlab:project_path:g/b:ref:b1", "project g/b"); err != nil {
		t.Errorf("Submit(g/b branch b1) = %v, want accepted: another tenant", err)
	}
	if err := try(m, "alice", ""); err != nil {
		t.Errorf("Submit(alice, no tenant) = %v, want accepted", err)
	}
	if err := try(m, "bob", ""); err != nil {
		t.Errorf("Submit(bob, no tenant) = %v, want accepted: owners without a tenant count alone", err)
	}
	stop()
	m, _ = r.start(t, false, jobs.WithMaxQueued(0, 1))
	if err := try(m, "gitlab:project_path:g/a:ref:b3", "project g/a"); !errors.As(err, &qf) || !qf.PerOwner {
		t.Errorf("Submit(g/a branch b3) after a restart = %v, want the per-identity QueueFullError of the tenant", err)
	}
}

func TestManagerRetention(t *testing.T) {
	r := newRestartable(t)
	m, stop := r.start(t, true, jobs.WithRetention(time.Second))
	j := submitTo(t, m, "alice", "k", api.BuildSpec{Destinations: []string{r.reg + "/test/ret:v1"}}, scratchContext(t, "r"))
	if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("build = %v %q, want succeeded", b.Status, b.Error)
	}
	logPath := r.l.Log(j.ID)
	deadline := time.Now().Add(testenv.Scale(15 * time.Second))
	for {
		_, err := m.Get("alice", j.ID)
		if errors.Is(err, jobs.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("finished build still there 15s past a 1s retention")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(logPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log of an expired build: Stat = %v, want it removed", err)
	}
	stop()
	st, err := store.Open(r.l.JobStore)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Get(j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("store record of an expired build: Get = %v, want ErrNotFound", err)
	}
	if id, _ := st.Idempotent("alice", "k"); id != "" {
		t.Errorf("idempotency key of an expired build = %q, want none", id)
	}
}

// TestManagerSandboxLimits runs a memory hog, a process storm and a
// normal build side by side under cgroup limits: the first two fail with
// the limit named, the third succeeds.
func TestManagerSandboxLimits(t *testing.T) {
	r := newRestartable(t, kaniko.WithLimits(256<<20, 200))
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithConcurrency(3), jobs.WithJobTimeout(2*time.Minute))
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
	// Each bounded, so that a host without working limits suffers little:
	// tail holds 900 MB, the loop starts 400 sleeps of 30s (scaled, as the
	// bound on how soon the limits stop them is).
	hog := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{dest("hog")}},
		busyboxContext(t, base, "head -c 1000000000 /dev/zero | tail -c 900000000 > /dev/null"))
	storm := submitTo(t, m, "bob", "", api.BuildSpec{Destinations: []string{dest("storm")}},
		busyboxContext(t, base, `i=0; while [ $i -lt 400 ]; do sleep `+seconds(30*time.Second)+` & i=$((i+1)); done; wait`))
	normal := submitTo(t, m, "carol", "", api.BuildSpec{Destinations: []string{dest("normal")}}, scratchContext(t, "fine"))
	start := time.Now()
	tests := []struct {
		name       string
		j          *jobs.Job
		wantStatus api.Status
		wantError  string
	}{
		{"memory hog", hog, api.StatusFailed, "ran out of memory (limit 256 MiB)"},
		{"process storm", storm, api.StatusFailed, "reached its process limit (200)"},
		{"normal build beside them", normal, api.StatusSucceeded, ""},
	}
	for _, tc := range tests {
		b := wait(t, tc.j, 2*time.Minute)
		if b.Status != tc.wantStatus || !strings.Contains(b.Error, tc.wantError) {
			t.Errorf("%s = %v %q, want %v %q; log:\n%s", tc.name, b.Status, b.Error, tc.wantStatus, tc.wantError, logOf(t, tc.j))
		}
	}
	if took := time.Since(start); took > testenv.Scale(28*time.Second) {
		t.Errorf("limited builds took %s to fail, want them stopped before their sleeps end", took)
	}

	// In memory, the files a build writes are charged to its memory: it
	// fails saying so, not with a full disk.
	mr := newRestartable(t, kaniko.WithLimits(256<<20, 200))
	mm, _ := mr.start(t, true, jobs.WithMemoryWorkspaces(1<<30), memLimits)
	writer := submitTo(t, mm, "dave", "", api.BuildSpec{Destinations: []string{mr.reg + "/test/writer:v1"}},
		busyboxContext(t, testenv.Busybox(t, mr.reg), "head -c 400000000 /dev/zero > /big"))
	const want = "ran out of memory (limit 256 MiB, which counts the files it writes: its workspace is in memory)"
	if b := wait(t, writer, 2*time.Minute); b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
		t.Errorf("build writing 400 MB in memory = %v %q, want %v %q; log:\n%s", b.Status, b.Error, api.StatusFailed, want, logOf(t, writer))
	}
	// No group is left behind.
	for _, h := range []string{"memory", "pids"} {
		if ents, err := os.ReadDir(filepath.Join("/sys/fs/cgroup", h, "buildgw-kaniko")); err == nil {
			for _, e := range ents {
				for _, j := range []*jobs.Job{hog, storm, normal} {
					if e.Name() == j.ID {
						t.Errorf("cgroup %s/buildgw-kaniko/%s left behind", h, e.Name())
					}
				}
			}
		}
	}
}

// TestManagerDiskFull fills a small state directory with an upload: the
// submission fails naming the cause, leaves nothing half-written, and the
// next one that fits is accepted.
func TestManagerDiskFull(t *testing.T) {
	r := newRestartable(t)
	if err := unix.Mount("tmpfs", r.dir, "tmpfs", 0, "size=4m,mode=0711"); err != nil {
		t.Fatalf("mounting a 4 MiB tmpfs: %v", err)
	}
	// Registered before the Manager's, so it runs after the Manager stops.
	t.Cleanup(func() { unix.Unmount(r.dir, unix.MNT_DETACH) })
	m, _ := r.start(t, false)
	big := make([]byte, 8<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	spec := api.BuildSpec{Destinations: []string{r.reg + "/test/full:v1"}}
	_, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: spec},
		bytes.NewReader(contextTar(t, file{"Dockerfile", "FROM scratch\nCOPY big /big\n"}, file{"big", string(big)})))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Submit(8 MiB into 4 MiB) = %v, want ENOSPC", err)
	}
	if ws, _ := os.ReadDir(r.l.Jobs); len(ws) != 0 {
		t.Errorf("workspaces after a failed upload = %d, want none", len(ws))
	}
	if logs, _ := os.ReadDir(r.l.Logs); len(logs) != 0 {
		t.Errorf("logs after a failed upload = %d, want none", len(logs))
	}
	if l := m.List("alice"); len(l) != 0 {
		t.Errorf("builds after a failed upload = %d, want none", len(l))
	}
	if _, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: spec}, bytes.NewReader(scratchContext(t, "small"))); err != nil {
		t.Errorf("Submit(small) after the disk emptied again = %v, want accepted", err)
	}
}

// stallingRegistry is a real in-memory registry whose manifest uploads
// hang until the client gives up: a push that never ends.
type stallingRegistry struct {
	reg     http.Handler
	stalled chan struct{}
	release chan struct{} // closed at the end of the test
	once    sync.Once
}

func (s *stallingRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
		s.once.Do(func() { close(s.stalled) })
		select {
		case <-r.Context().Done():
		case <-s.release:
		}
		return
	}
	s.reg.ServeHTTP(w, r)
}

func TestManagerCancelDuringPush(t *testing.T) {
	r := newRestartable(t)
	sr := &stallingRegistry{reg: registry.New(registry.Logger(log.New(io.Discard, "", 0))), stalled: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(sr)
	defer srv.Close()
	defer close(sr.release)
	m, _ := r.start(t, true)
	host := strings.TrimPrefix(srv.URL, "http://")
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{host + "/test/stall:v1"}}, scratchContext(t, "p"))
	select {
	case <-sr.stalled:
	case <-time.After(testenv.Scale(time.Minute)):
		t.Fatalf("push never reached the manifest; job %v, log:\n%s", j.Status(), logOf(t, j))
	}
	if got := j.Status(); got != api.StatusPushing {
		t.Fatalf("status during the push = %v, want %v", got, api.StatusPushing)
	}
	start := time.Now()
	if _, err := m.Cancel("alice", j.ID); err != nil {
		t.Fatalf("Cancel during push = %v", err)
	}
	b := wait(t, j, 30*time.Second)
	if b.Status != api.StatusCancelled || time.Since(start) > testenv.Scale(10*time.Second) {
		t.Errorf("cancelled during push = %v %q after %s, want cancelled at once", b.Status, b.Error, time.Since(start))
	}
	if ws, _ := os.ReadDir(r.l.Jobs); len(ws) != 0 {
		t.Errorf("workspaces after cancelling the push = %d, want none", len(ws))
	}
}

// TestManagerWorkspaceLimit runs a RUN step that writes 50 MiB under a
// workspace limit of 20 MiB beside a normal build: the first is stopped
// and fails naming the limit, with nothing left of its workspace; the
// second succeeds.
func TestManagerWorkspaceLimit(t *testing.T) {
	r := newRestartable(t)
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithConcurrency(2), jobs.WithJobTimeout(2*time.Minute),
		jobs.WithWorkspaceLimit(20<<20), jobs.WithDiskCheckInterval(200*time.Millisecond))
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
	// The sleep keeps the build going, so only the limit can end it early;
	// it scales with the bound on how soon the limit does.
	big := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{dest("big")}},
		busyboxContext(t, base, "dd if=/dev/zero of=/big bs=1M count=50 && sleep "+seconds(60*time.Second)))
	normal := submitTo(t, m, "bob", "", api.BuildSpec{Destinations: []string{dest("normal")}},
		busyboxContext(t, base, "echo fine > /fine"))
	start := time.Now()
	tests := []struct {
		name       string
		j          *jobs.Job
		wantStatus api.Status
		wantError  string
	}{
		{"50 MiB written", big, api.StatusFailed, "the build's workspace exceeded 20 MiB (workspace_max_bytes); see the build log"},
		{"normal build beside it", normal, api.StatusSucceeded, ""},
	}
	for _, tc := range tests {
		b := wait(t, tc.j, 2*time.Minute)
		if b.Status != tc.wantStatus || b.Error != tc.wantError {
			t.Errorf("%s = %v %q, want %v %q; log:\n%s", tc.name, b.Status, b.Error, tc.wantStatus, tc.wantError, logOf(t, tc.j))
		}
	}
	if took := time.Since(start); took > testenv.Scale(50*time.Second) {
		t.Errorf("the build over its workspace limit took %s to fail, want it stopped before its sleep ends", took)
	}
	if l := logOf(t, big); !strings.Contains(l, "over the limit of 20 MiB") {
		t.Errorf("log of the stopped build lacks the measured size:\n%s", l)
	}
	if got := registryDigestOrEmpty(dest("big")); got != "" {
		t.Errorf("the stopped build pushed %s", got)
	}
	// Nothing of either workspace is left, in place or in the trash.
	for _, d := range []string{r.l.Jobs, r.l.Trash} {
		deadline := time.Now().Add(testenv.Scale(30 * time.Second))
		for {
			ents, err := os.ReadDir(d)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s/ still holds %d entries, want none", d, len(ents))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// registryDigestOrEmpty is the digest ref has in the registry, or "" if
// it is not there.
func registryDigestOrEmpty(ref string) string {
	d, err := crane.Digest(ref, crane.Insecure)
	if err != nil {
		return ""
	}
	return d
}

// TestManagerDiskAlmostFull runs a build on a state directory of 256 MiB
// that must keep 200 MiB free: its RUN writes 100 MiB, so the disk falls
// under the minimum while the workspace grows, and the build is stopped
// before the disk fills, naming min_free_bytes.
func TestManagerDiskAlmostFull(t *testing.T) {
	r := newRestartable(t)
	base := testenv.Busybox(t, r.reg)
	if err := unix.Mount("tmpfs", r.dir, "tmpfs", 0, "size=256m,mode=0711"); err != nil {
		t.Fatalf("mounting a 256 MiB tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(r.dir, unix.MNT_DETACH) })
	m, _ := r.start(t, true, jobs.WithJobTimeout(2*time.Minute), jobs.WithMinFreeBytes(200<<20),
		jobs.WithDiskCheckInterval(200*time.Millisecond))
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/filler:v1"}},
		busyboxContext(t, base, "dd if=/dev/zero of=/big bs=1M count=100; sleep "+seconds(60*time.Second)))
	b := wait(t, j, 2*time.Minute)
	const want = "under min_free_bytes of 200 MiB) and the build's workspace kept growing"
	if b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
		t.Errorf("build filling the disk = %v %q, want failed %q; log:\n%s", b.Status, b.Error, want, logOf(t, j))
	}
	if b.FinishedAt.Sub(*b.StartedAt) > testenv.Scale(50*time.Second) {
		t.Errorf("build filling the disk ran %s, want it stopped before its sleep ends", b.FinishedAt.Sub(*b.StartedAt))
	}
}

// seconds is d scaled, in whole seconds, for a build's sleep that a
// scaled bound must beat: on a slower host both stretch alike.
func seconds(d time.Duration) string {
	return strconv.Itoa(int(testenv.Scale(d) / time.Second))
}

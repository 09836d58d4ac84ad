package dind

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/runnertest"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/workspace"
)

// requireDocker returns a runner of the current engine (engine) with
// opts, and fails the test unless it can run here: the tests run in CI
// with docker.io installed and the engine built (scripts/setup --test),
// never skipped.
func requireDocker(t testing.TB, opts ...Option) *Runner {
	t.Helper()
	r, err := New(append(engine(t), opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.Available(context.Background()); err != nil {
		t.Fatalf("dind runner unavailable: %v (run scripts/setup --test; it installs docker.io and builds dockerd and buildx)", err)
	}
	return r
}

// engine is what this package's tests build with: dockerd v28 driven by
// buildx (testenv.DockerEngine), the current BuildKit, with containerd
// and runc from Debian's docker.io. TestDebianDocker builds with
// docker.io's own dockerd 20.10 and docker CLI, the gateway's default.
func engine(t testing.TB) []Option {
	t.Helper()
	dockerd, buildx := testenv.DockerEngine(t)
	return []Option{WithDockerd(dockerd), WithBuildx(buildx)}
}

// TestConformance runs the runner suite against real per-job daemons.
func TestConformance(t *testing.T) {
	requireDocker(t)
	// After the suite's parallel subtests, which run once this function
	// has returned.
	t.Cleanup(func() { checkNoLeftovers(t) })
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	runnertest.Run(t, func(t *testing.T) builder.Runner {
		// The gateway's default limits: every case runs in a limited
		// job cgroup, its daemon held until it is in it.
		r, err := New(append(engine(t), WithLimits(4<<30, 4096))...)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return r
	}, runnertest.WithBaseImages(store), runnertest.WithHostname(RunHostname))
}

// checkNoLeftovers checks that no daemon of the conformance suite's
// builds is left: no process naming one of its workspaces' dind
// directories (the suite makes them under TMPDIR/buildgw-runnertest-*),
// and no mount there.
func checkNoLeftovers(t *testing.T) {
	t.Helper()
	prefix := filepath.Join(os.TempDir(), "buildgw-runnertest-")
	ours := func(a string) bool { return strings.Contains(a, prefix) && strings.Contains(a, "/dind") }
	for _, p := range liveProcs(t) {
		if args := p.Args(); slices.ContainsFunc(args, ours) {
			t.Errorf("process of a job daemon left: %d %q", p.Pid, args)
		}
	}
	ms, err := hostfs.Mounts("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if ours(m.Mountpoint) {
			t.Errorf("mount of a job daemon left: %s", m.Mountpoint)
		}
	}
}

// newRequest lays out a workspace like jobs.Manager does, with the
// Dockerfile and files in its context.
func newRequest(t testing.TB, reg string, files map[string]string, args map[string]string) *builder.Request {
	t.Helper()
	req := newRequestNoBases(t, reg, files, args)
	prepareBases(t, req)
	return req
}

// newRequestNoBases is newRequest without base images.
func newRequestNoBases(t testing.TB, reg string, files map[string]string, args map[string]string) *builder.Request {
	t.Helper()
	ws := filepath.Join(workspace.NewLayout(testenv.StateDir(t)).Jobs, "job")
	ctxDir, out := filepath.Join(ws, "context"), filepath.Join(ws, "out")
	for _, d := range []string{ctxDir, out} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	req := &builder.Request{
		ID:                 "dindtest-" + filepath.Base(filepath.Dir(filepath.Dir(ws))),
		Workspace:          ws,
		ContextDir:         ctxDir,
		Dockerfile:         "Dockerfile",
		BuildArgs:          args,
		OutputDir:          out,
		InsecureRegistries: []string{reg},
	}
	return req
}

// prepareBases fetches req's base images into a store of the test's own,
// as the gateway does before every build.
func prepareBases(t testing.TB, req *builder.Request, opts ...basestore.Option) {
	t.Helper()
	store, err := basestore.New(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if req.Analysis, err = dockerfile.Load(req.ContextDir, req.Dockerfile, req.BuildArgs, req.Target); err != nil {
		t.Fatal(err)
	}
	b, err := store.Prepare(context.Background(), req, io.Discard)
	if err != nil {
		t.Fatalf("Prepare(%q): %v", req.Dockerfile, err)
	}
	req.BaseImages = b
}

// images lists the repository tags a daemon holds.
func images(t *testing.T, d *Daemon) []string {
	t.Helper()
	resp, err := d.Get(context.Background(), "/images/json")
	if err != nil {
		t.Errorf("listing images: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var list []struct{ RepoTags []string }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Errorf("listing images: %v", err)
	}
	var tags []string
	for _, i := range list {
		tags = append(tags, i.RepoTags...)
	}
	slices.Sort(tags)
	return tags
}

// TestConcurrentDaemonsShareNothing runs two builds at once and checks,
// just before each daemon is stopped, that each holds its own image and
// the base, never the other's, in a data root of its own.
func TestConcurrentDaemonsShareNothing(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)
	const dockerfile = "ARG BASE\nFROM ${BASE}\nARG WHO\nRUN echo $WHO > /who && sleep 2\n"

	type seen struct {
		dir, sock string
		tags      []string
	}
	var mu sync.Mutex
	byTag := map[string]seen{}
	testHookBeforeStop = func(d *Daemon) {
		tags := images(t, d)
		mu.Lock()
		defer mu.Unlock()
		for _, tg := range tags {
			if strings.HasPrefix(tg, "buildgw/job:") {
				byTag[tg] = seen{d.Dir(), d.Socket(), tags}
			}
		}
	}
	t.Cleanup(func() { testHookBeforeStop = nil })

	reqs := []*builder.Request{
		newRequest(t, reg, map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": base, "WHO": "alpha"}),
		newRequest(t, reg, map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": base, "WHO": "beta"}),
	}
	reqs[0].ID, reqs[1].ID = "alpha", "beta"
	var wg sync.WaitGroup
	errs := make([]error, len(reqs))
	logs := make([]strings.Builder, len(reqs))
	for i, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Build(context.Background(), req, &syncWriter{w: &logs[i]})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Build(%s): %v\n%s", reqs[i].ID, err, logs[i].String())
		}
	}
	a, b := byTag["buildgw/job:alpha"], byTag["buildgw/job:beta"]
	if a.dir == "" || b.dir == "" {
		t.Fatalf("hook saw %v, want both jobs' images", byTag)
	}
	if a.dir == b.dir || a.sock == b.sock {
		t.Errorf("both jobs used daemon %s (socket %s)", a.dir, a.sock)
	}
	for _, c := range []struct {
		s          seen
		own, other string
	}{{a, "buildgw/job:alpha", "buildgw/job:beta"}, {b, "buildgw/job:beta", "buildgw/job:alpha"}} {
		if want := []string{c.own, base}; !slices.Equal(c.s.tags, sorted(want)) {
			t.Errorf("daemon %s holds %q, want exactly %q", c.s.dir, c.s.tags, sorted(want))
		}
		if slices.Contains(c.s.tags, c.other) {
			t.Errorf("daemon %s sees the other job's image %s", c.s.dir, c.other)
		}
		if left := referencing(c.s.dir); len(left) > 0 {
			t.Errorf("processes of daemon %s left after Build: %v", c.s.dir, left)
		}
	}
	// The daemons' files stay for the Manager, which removes them with
	// the workspace through RemoveAll.
	for _, req := range reqs {
		if err := r.RemoveAll(context.Background(), req.Workspace); err != nil {
			t.Errorf("RemoveAll(%s): %v", req.Workspace, err)
		}
		if _, err := os.Lstat(req.Workspace); !os.IsNotExist(err) {
			t.Errorf("RemoveAll left %s: %v", req.Workspace, err)
		}
	}
	// Both overlapped: each RUN sleeps 2s, and the builds ran at once.
	checkNoLeftovers(t)
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestAvailable(t *testing.T) {
	requireDocker(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opt  Option
		want string
	}{
		{"no dockerd", WithDockerd("/nonexistent/dockerd"), "dockerd not found"},
		{"no docker CLI", WithDocker("/nonexistent/docker"), "docker CLI not found"},
		{"missing init", WithInit("/nonexistent/docker-init"), "init"},
		{"no buildx", WithBuildx("/nonexistent/buildx"), "buildx not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.opt)
			if err != nil {
				t.Fatalf("New: %v (a missing binary must not fail New)", err)
			}
			if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Available() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// With buildx, the docker CLI is not used.
	t.Run("buildx without docker CLI", func(t *testing.T) {
		r, err := New(append(engine(t), WithDocker("/nonexistent/docker"))...)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err != nil {
			t.Errorf("Available() = %v, want nil: buildx builds", err)
		}
	})
	t.Run("dockerd missing from PATH", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		r, err := New()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), "dockerd not found") {
			t.Errorf("Available() = %v, want an error naming dockerd", err)
		}
	})
	// Asked at every submission, the version probe starts dockerd once.
	t.Run("dockerd started once", func(t *testing.T) {
		real, err := exec.LookPath("dockerd")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		count := filepath.Join(dir, "count")
		wrapper := filepath.Join(dir, "dockerd")
		script := "#!/bin/sh\necho x >> " + count + "\nexec " + real + " \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		r, err := New(WithDockerd(wrapper))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := r.Available(ctx); err != nil {
				t.Fatalf("Available() = %v", err)
			}
		}
		b, _ := os.ReadFile(count)
		if n := strings.Count(string(b), "x"); n != 1 {
			t.Errorf("three Available() calls started dockerd %d times, want 1", n)
		}
	})
	t.Run("build without dockerd", func(t *testing.T) {
		r, err := New(WithDockerd("/nonexistent/dockerd"))
		if err != nil {
			t.Fatal(err)
		}
		req := newRequest(t, "127.0.0.1:1", map[string]string{"Dockerfile": "FROM scratch\n"}, nil)
		if _, err := r.Build(ctx, req, io.Discard); err == nil {
			t.Fatal("Build without dockerd succeeded")
		}
		if _, err := os.Lstat(filepath.Join(req.Workspace, "dind")); !os.IsNotExist(err) {
			t.Errorf("failed start left %s/dind: %v", req.Workspace, err)
		}
	})
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithStorageDriver("aufs"), "storage driver"},
		{WithNetwork("bridge"), `network "bridge"`},
		{WithNetwork("host"), `network "host"`},
		{WithStartTimeout(0), "start timeout"},
		{WithCgroupRoot("relative"), "cgroup root"},
		{WithCgroupRoot("/"), "cgroup root"},
	} {
		if _, err := New(tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New() = %v, want an error containing %q", err, tc.want)
		}
	}
}

// TestReap leaves a daemon behind as a killed gateway would (started, its
// Daemon forgotten, with a container running), then checks that Reap
// kills it and everything of it, and deletes its state.
func TestReap(t *testing.T) {
	r := requireDocker(t)
	stateDir := testenv.StateDir(t)
	ws := filepath.Join(workspace.NewLayout(stateDir).Jobs, "crashed")
	if err := os.MkdirAll(ws, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(ws, "dind")
	// In the host's network, to pull from the test's registry on loopback.
	d, err := r.StartDaemon(context.Background(), dir, DaemonConfig{Tag: "crashed", Network: NetworkHost})
	if err != nil {
		t.Fatalf("StartDaemon: %v", err)
	}
	t.Cleanup(func() { d.Stop() })

	// A container of the daemon, running a process to look for.
	img, err := baseimage.Busybox(testenv.BusyboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := testenv.Registry(t)
	ref := reg + "/reap/busybox:latest"
	tag, _ := name.NewTag(ref, name.Insecure)
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("sleep %d", 400000+time.Now().UnixNano()%100000)
	docker := func(args ...string) {
		t.Helper()
		cmd := exec.Command(r.o.docker, append([]string{"--host=unix://" + d.Socket()}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + filepath.Join(dir, homeDir), "DOCKER_CONFIG=" + filepath.Join(dir, clientDir)}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker %q: %v\n%s", args, err, out)
		}
	}
	docker("pull", ref)
	docker("run", "-d", "--network=host", ref, "sh", "-c", marker)
	if !poll(10*time.Second, func() bool { return len(procsWith(marker)) > 0 }) {
		t.Fatalf("the container's %q is not running", marker)
	}
	var st state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &st)
	if len(cgroupDirs(t, st.Cgroup)) == 0 {
		t.Errorf("no cgroup %s for the daemon's container", st.Cgroup)
	}

	// Forget the daemon as a dead gateway would: it is no child of ours
	// any more for Reap, which only has the state directory to go by.
	cleaned, err := reap(stateDir)
	if err != nil {
		t.Errorf("Reap: %v", err)
	}
	if !slices.Equal(cleaned, []string{dir}) {
		t.Errorf("Reap cleaned %q, want [%s]", cleaned, dir)
	}
	if left := referencing(dir); len(left) > 0 {
		t.Errorf("processes of the daemon left after Reap: %v", left)
	}
	if (hostfs.Process{Pid: st.Pid, Start: st.Start}).Alive() {
		t.Errorf("the daemon's init %d still running after Reap", st.Pid)
	}
	if !poll(5*time.Second, func() bool { return len(procsWith(marker)) == 0 }) {
		t.Errorf("the container's process still running after Reap: %v", procsWith(marker))
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("Reap left %s: %v", dir, err)
	}
	if left := cgroupDirs(t, st.Cgroup); len(left) > 0 {
		t.Errorf("Reap left cgroups %q", left)
	}
	if _, err := os.Lstat(ws); err != nil {
		t.Errorf("Reap removed the workspace itself: %v", err)
	}
	// Nothing left to reap.
	if cleaned, err := reap(stateDir); err != nil || len(cleaned) != 0 {
		t.Errorf("second Reap = %q, %v; want nothing", cleaned, err)
	}
}

// TestReapOrphanedProcess reaps a daemon process whose directory is gone.
func TestReapOrphanedProcess(t *testing.T) {
	stateDir := testenv.StateDir(t)
	dir := filepath.Join(workspace.NewLayout(stateDir).Jobs, "gone", "dind")
	// Not a daemon: a process naming the job's daemon directory, as
	// dockerd's --pidfile does.
	cmd := exec.Command("/bin/sh", "-c", "sleep 600", "sh", "--pidfile="+filepath.Join(dir, "run", "docker.pid"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	cleaned, err := reap(stateDir)
	if err != nil {
		t.Errorf("Reap: %v", err)
	}
	if !slices.Equal(cleaned, []string{dir}) {
		t.Errorf("Reap cleaned %q, want [%s]", cleaned, dir)
	}
	select {
	case <-done:
	case <-time.After(testenv.Scale(5 * time.Second)):
		t.Errorf("process naming %s still running after Reap", dir)
	}
}

// TestStartDaemonNoHostState checks what a daemon leaves outside its
// directory: nothing under /etc/docker, no mount on the host, and no
// process once stopped.
func TestStartDaemonNoHostState(t *testing.T) {
	r := requireDocker(t)
	before, _ := os.ReadDir("/etc/docker")
	t.Setenv("BUILDGW_DIND_TEST_SECRET", "x")
	// A long directory, as deep state directories make: containerd's
	// sockets must not be under it (containerd refuses paths over 104
	// bytes), only the API socket, which Linux allows up to 107.
	base := testenv.StateDir(t)
	pad := 80 - len(base) - len("/dind") - 1
	if pad < 1 {
		t.Fatalf("state directory %s too long for this test", base)
	}
	dir := filepath.Join(base, strings.Repeat("d", pad), "dind")
	if err := os.Mkdir(filepath.Dir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d, err := r.StartDaemon(context.Background(), dir, DaemonConfig{ExtraCAs: []byte("# no CA\n")})
	if err != nil {
		t.Fatalf("StartDaemon: %v", err)
	}
	t.Logf("daemon ready in %s, storage driver %s", time.Since(start), d.StorageDriver())
	ms, _ := hostfs.Mounts(dir)
	for _, m := range ms {
		t.Errorf("daemon mount %s visible on the host", m.Mountpoint)
	}
	// The daemon's environment: fixed, none of ours.
	env := procEnv(t, d.Pid())
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k != "PATH" && k != "HOME" && k != "SSL_CERT_FILE" && k != "PWD" {
			t.Errorf("daemon environment holds %s", e)
		}
	}
	if len(referencing(dir)) < 1 {
		t.Errorf("expected dockerd to name %s: %v", dir, referencing(dir))
	}
	start = time.Now()
	if err := d.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	t.Logf("daemon stopped in %s", time.Since(start))
	if left := referencing(dir); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("Stop left %s: %v", dir, err)
	}
	after, _ := os.ReadDir("/etc/docker")
	if len(after) != len(before) {
		t.Errorf("/etc/docker changed: %v -> %v", before, after)
	}
}

func procEnv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func procsWith(s string) []int {
	var pids []int
	all, _ := hostfs.Procs()
	for _, p := range all {
		if p.State != 'Z' && strings.Contains(strings.Join(p.Args(), " "), s) {
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

// liveProcs returns the host's processes but zombies.
func liveProcs(t *testing.T) []hostfs.Process {
	t.Helper()
	all, err := hostfs.Procs()
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(p hostfs.Process) bool { return p.State == 'Z' })
}

func cgroupDirs(t *testing.T, cg string) []string {
	t.Helper()
	ms, err := hostfs.MountsOfType("cgroup", "cgroup2")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, m := range ms {
		if _, err := os.Stat(filepath.Join(m.Mountpoint, cg)); err == nil {
			dirs = append(dirs, filepath.Join(m.Mountpoint, cg))
		}
	}
	return dirs
}

// poll reports whether cond holds within d, scaled.
func poll(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(testenv.Scale(d)); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

func TestBuildArgs(t *testing.T) {
	r := &Runner{o: options{network: "host"}}
	d := &Daemon{dir: "/ws/dind"}
	req := &builder.Request{
		ContextDir: "/ws/context",
		Dockerfile: "docker/Dockerfile.prod",
		BuildArgs:  map[string]string{"B": "2", "A": "x=y z", "E": ""},
		Labels:     map[string]string{"org.b": "b", "org.a": "a"},
		Target:     "final",
	}
	want := []string{
		"--host=unix:///ws/dind/run/docker.sock", "build",
		"--file=/ws/context/docker/Dockerfile.prod", "--tag=buildgw/job:x", "--iidfile=/ws/dind/run/iid",
		"--progress=plain", "--network=host", "--pull=false",
		"--build-arg=A=x=y z", "--build-arg=B=2", "--build-arg=E=",
		"--label=org.a=a", "--label=org.b=b", "--target=final", "/ws/context",
	}
	if got := r.buildArgs(d, req, "buildgw/job:x"); !slices.Equal(got, want) {
		t.Errorf("buildArgs =\n  %q\nwant\n  %q", got, want)
	}
}

func TestDaemonArgs(t *testing.T) {
	r := &Runner{}
	got := r.daemonArgs("/ws/dind", "overlay2", "/buildgw-dind/j", []string{"127.0.0.1:5000", "reg.local"})
	for _, want := range []string{
		"--data-root=/var/lib/buildgw-dind", "--exec-root=/run/docker", "--pidfile=/ws/dind/run/docker.pid",
		"--host=unix:///ws/dind/run/docker.sock", "--config-file=/ws/dind/etc/daemon.json",
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
		"--userland-proxy=false", "--storage-driver=overlay2", "--cgroup-parent=/buildgw-dind/j",
		"--insecure-registry=127.0.0.1:5000", "--insecure-registry=reg.local",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("daemonArgs lacks %s: %q", want, got)
		}
	}
	for _, a := range got {
		if strings.Contains(a, "tcp://") || strings.Contains(a, "/var/run/docker.sock") {
			t.Errorf("daemonArgs has %s", a)
		}
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{
		"01HXYZ":          "01hxyz",
		"runnertest-ab12": "runnertest-ab12",
		"a/b:c@d":         "abcd",
		"":                "job",
		"-x":              "job-x",
	} {
		if got := tagName(in); got != want {
			t.Errorf("tagName(%q) = %q, want %q", in, got, want)
		}
	}
	a, b := cgroupName("Job/1"), cgroupName("Job/1")
	if a == b || !strings.HasPrefix(a, "job1-") {
		t.Errorf("cgroupName twice = %q, %q; want distinct names starting job1-", a, b)
	}
}

// imageFiles returns the regular files of img's flattened filesystem.
func imageFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
}

// helperEnv makes the test binary, re-run, a "gateway" that starts a
// daemon (helperDockerdEnv's) in the directory it names and waits to be
// killed.
const (
	helperEnv        = "BUILDGW_DIND_TEST_HELPER_DIR"
	helperDockerdEnv = "BUILDGW_DIND_TEST_HELPER_DOCKERD"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		r, err := New(WithDockerd(os.Getenv(helperDockerdEnv)))
		if err == nil {
			_, err = r.StartDaemon(context.Background(), dir, DaemonConfig{Tag: "crash"})
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		select {}
	}
	os.Exit(m.Run())
}

// TestGatewayCrash kills a "gateway" (SIGKILL) that has a daemon running:
// the daemon and all of its processes must die with it, and Reap must
// then delete what is left.
func TestGatewayCrash(t *testing.T) {
	r := requireDocker(t)
	stateDir := testenv.StateDir(t)
	ws := filepath.Join(workspace.NewLayout(stateDir).Jobs, "crash")
	if err := os.MkdirAll(ws, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(ws, "dind")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperDockerdEnv+"="+r.Dockerd())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); cleanupDir(dir) })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper: %q", line)
	}
	if len(referencing(dir)) < 2 {
		t.Fatalf("expected the daemon's processes to name %s: %v", dir, referencing(dir))
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !poll(5*time.Second, func() bool { return len(referencing(dir)) == 0 }) {
		t.Errorf("daemon processes outlived their gateway: %v", referencing(dir))
	}
	cleaned, err := reap(stateDir)
	if err != nil {
		t.Errorf("Reap: %v", err)
	}
	if !slices.Equal(cleaned, []string{dir}) {
		t.Errorf("Reap cleaned %q, want [%s]", cleaned, dir)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("Reap left %s: %v", dir, err)
	}
}

// TestExportLayout checks the export: an OCI layout in the output
// directory whose one image has the built image's config and every layer,
// also layers that Docker saves only once because two steps made the same
// (empty) change, compressed.
func TestExportLayout(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)
	req := newRequest(t, reg, map[string]string{
		"Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY same.txt /same.txt\nCOPY same.txt /same.txt\nCOPY big.bin /big.bin\nRUN echo done > /done\n",
		"same.txt":   "same\n",
		// Above the size held in memory, so it streams.
		"big.bin": strings.Repeat("0123456789abcdef", (maxSmallEntry/16)*2),
	}, map[string]string{"BASE": base})
	var log strings.Builder
	img, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	for _, f := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(req.OutputDir, f)); err != nil {
			t.Errorf("output is not an OCI layout: %v", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	// busybox, the same COPY twice, COPY, RUN.
	if len(layers) != 5 || len(cf.RootFS.DiffIDs) != 5 {
		t.Fatalf("image has %d layers and %d diff IDs, want 5", len(layers), len(cf.RootFS.DiffIDs))
	}
	if cf.RootFS.DiffIDs[1] != cf.RootFS.DiffIDs[2] {
		t.Errorf("the two same.txt layers differ: %s, %s (the test wants a layer Docker saves once)", cf.RootFS.DiffIDs[1], cf.RootFS.DiffIDs[2])
	}
	for i, l := range layers {
		mt, _ := l.MediaType()
		if mt != "application/vnd.docker.image.rootfs.diff.tar.gzip" {
			t.Errorf("layer %d has media type %s", i, mt)
		}
		d, _ := l.DiffID()
		if d != cf.RootFS.DiffIDs[i] {
			t.Errorf("layer %d diff ID %s, config says %s", i, d, cf.RootFS.DiffIDs[i])
		}
	}
	files := imageFiles(t, img)
	if files["big.bin"] != strings.Repeat("0123456789abcdef", (maxSmallEntry/16)*2) || files["done"] != "done\n" {
		t.Errorf("image files wrong: big.bin %d bytes, done %q", len(files["big.bin"]), files["done"])
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate: %v", err)
	}
}

// An image without layers (FROM scratch and only config) is exported
// although Docker 20.10 refuses to save it ("empty export").
func TestExportNoLayers(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.Registry(t)
	req := newRequestNoBases(t, reg, map[string]string{
		"Dockerfile": "FROM scratch\nLABEL team=build\nENV A=1\nEXPOSE 8080\nCMD [\"/app\", \"serve\"]\n",
	}, nil)
	var log strings.Builder
	img, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 0 || len(cf.RootFS.DiffIDs) != 0 {
		t.Errorf("image has %d layers and %d diff IDs, want none", len(layers), len(cf.RootFS.DiffIDs))
	}
	c := cf.Config
	if c.Labels["team"] != "build" || !slices.Contains(c.Env, "A=1") || !slices.Equal(c.Cmd, []string{"/app", "serve"}) {
		t.Errorf("config Labels = %v, Env = %v, Cmd = %v, want team=build, A=1, [/app serve]", c.Labels, c.Env, c.Cmd)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("config ExposedPorts = %v, want 8080/tcp", c.ExposedPorts)
	}
	if cf.OS != "linux" || len(cf.History) == 0 {
		t.Errorf("config OS = %q with %d history entries, want linux and the steps", cf.OS, len(cf.History))
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate: %v", err)
	}
}

// TestTmpfs builds with the data root on a tmpfs: nothing of the build
// reaches the disk, and the size bounds what a build may write.
func TestTmpfs(t *testing.T) {
	r := requireDocker(t, WithTmpfs(128<<20))
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)
	t.Run("fits", func(t *testing.T) {
		req := newRequest(t, reg, map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN head -c 20000000 /dev/urandom > /blob && echo written\n"}, map[string]string{"BASE": base})
		var log strings.Builder
		img, err := r.Build(context.Background(), req, &log)
		if err != nil {
			t.Fatalf("Build: %v\n%s", err, log.String())
		}
		if !strings.Contains(log.String(), "data root on a 128 MiB tmpfs") {
			t.Errorf("log does not say where the data root is:\n%s", log.String())
		}
		if files := imageFiles(t, img); len(files["blob"]) != 20000000 {
			t.Errorf("image /blob has %d bytes, want 20000000", len(files["blob"]))
		}
		// On the disk, the data root stayed an empty mount point.
		ents, err := os.ReadDir(filepath.Join(req.Workspace, "dind", dataDir))
		if err != nil || len(ents) != 0 {
			t.Errorf("data root on disk holds %v (%v), want nothing", ents, err)
		}
	})
	t.Run("too big", func(t *testing.T) {
		req := newRequest(t, reg, map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN head -c 200000000 /dev/zero > /blob\n"}, map[string]string{"BASE": base})
		var log strings.Builder
		_, err := r.Build(context.Background(), req, &log)
		if err == nil {
			t.Fatalf("Build writing 200 MB to a 128 MiB data root succeeded:\n%s", log.String())
		}
		if want := "no space left in the job's data root, a tmpfs of 128 MiB"; !strings.Contains(err.Error(), want) {
			t.Errorf("Build writing 200 MB to a 128 MiB data root = %v, want an error saying %q", err, want)
		}
		// (busybox's head reports the full overlay as an I/O error;
		// BuildKit then says the step failed: "executor failed running"
		// in v0.8, Docker 20.10's, "did not complete successfully" later.)
		if l := log.String(); !strings.Contains(l, "executor failed running") && !strings.Contains(l, "did not complete successfully") {
			t.Errorf("log does not show the failing RUN step:\n%s", log.String())
		}
		if left := referencing(filepath.Join(req.Workspace, "dind")); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
	})
}

// TestPredefinedPlatformArgs checks what PredefinedArgsPlatform promises
// the gateway's analysis: the daemon's builder resolves FROM with
// TARGETOS and TARGETARCH as BuildKit predefines them, for this host.
func TestPredefinedPlatformArgs(t *testing.T) {
	r := requireDocker(t)
	p := r.PredefinedArgsPlatform()
	if p.OS != "linux" || p.Architecture != runtime.GOARCH {
		t.Errorf("PredefinedArgsPlatform() = %s/%s, want linux/%s", p.OS, p.Architecture, runtime.GOARCH)
	}
	reg := testenv.Registry(t)
	req := newRequestNoBases(t, reg, map[string]string{
		"Dockerfile": "FROM scratch AS build-" + p.OS + "-" + p.Architecture + "\nCOPY a /a\n" +
			"FROM build-${TARGETOS}-${TARGETARCH}\nCOPY b /b\n",
		"a": "a\n",
		"b": "b\n",
	}, nil)
	var log strings.Builder
	img, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build of FROM build-${TARGETOS}-${TARGETARCH}: %v\n%s", err, log.String())
	}
	if files := imageFiles(t, img); files["a"] != "a\n" || files["b"] != "b\n" {
		t.Errorf("image files = %q, want a and b from the stage TARGETOS and TARGETARCH name", files)
	}
}

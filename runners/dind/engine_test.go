package dind

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
)

// daemonList GETs path from d's API and decodes its JSON list.
func daemonList(t *testing.T, d *Daemon, path string) []map[string]any {
	t.Helper()
	resp, err := d.Get(context.Background(), path)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return nil
	}
	defer resp.Body.Close()
	var list []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Errorf("GET %s: %v", path, err)
	}
	return list
}

// daemonEvents returns every event of type typ the daemon has recorded
// since it started.
func daemonEvents(t *testing.T, d *Daemon, typ string) []string {
	t.Helper()
	filters, _ := json.Marshal(map[string][]string{"type": {typ}})
	path := "/events?since=0&until=" + strconv.FormatInt(time.Now().Unix()+1, 10) + "&filters=" + url.QueryEscape(string(filters))
	resp, err := d.Get(context.Background(), path)
	if err != nil {
		t.Errorf("GET /events: %v", err)
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var events []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			events = append(events, l)
		}
	}
	return events
}

// TestBuildxSandbox builds with buildx against dockerd v28 (the engine
// of this package's tests) from a gateway whose environment names other
// daemons and builders, and checks that buildx used the job's daemon and
// its own BuildKit only (the docker driver): no container ever appeared
// in the daemon (a docker-container builder is one), no builder instance
// was recorded, no image but the base and the result is there; that the
// build is BuildKit's current one (TARGETSTAGE, COPY sources whose names
// hold "+" or non-ASCII characters, which the 20.10 CLI's context
// transfer loses); and that the log keeps the steps' output without
// BuildKit's vertex digests.
func TestBuildxSandbox(t *testing.T) {
	r := requireDocker(t)
	if r.Buildx() == "" {
		t.Fatal("the engine of the tests has no buildx")
	}
	// What buildx would otherwise follow: nothing of the gateway's
	// environment reaches it. All loopback, and never reached: the
	// telemetry endpoints are a listener of the test's, which counts
	// connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialed atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	otel := "http://" + ln.Addr().String()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otel)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("DOCKER_CLI_OTEL_EXPORTER_OTLP_ENDPOINT", otel)
	t.Setenv("HTTP_PROXY", otel)
	t.Setenv("HTTPS_PROXY", otel)
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
	t.Setenv("DOCKER_CONTEXT", "elsewhere")
	t.Setenv("BUILDX_BUILDER", "elsewhere")
	t.Setenv("BUILDKIT_HOST", "tcp://127.0.0.1:1")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("BUILDX_CONFIG", t.TempDir())

	if got := r.PredefinedArgs(); !slices.Contains(got, "TARGETSTAGE") {
		t.Errorf("PredefinedArgs() on dockerd v28 = %q, want TARGETSTAGE in it", got)
	}
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)
	req := newRequest(t, reg, map[string]string{
		"Dockerfile": "ARG BASE\nFROM ${BASE} AS final\nARG TARGETSTAGE\nRUN echo stage=$TARGETSTAGE > /stage && echo ran-the-step\n" +
			"COPY [\"a+b\", \"caf\u00e9\", \"/files/\"]\n",
		"a+b":       "plus\n",
		"caf\u00e9": "accent\n",
	}, map[string]string{"BASE": base})

	type seen struct {
		containers []map[string]any
		events     []string
		images     []string
		instances  []string
		hasSet     bool
	}
	var s seen
	testHookBeforeStop = func(d *Daemon) {
		s.containers = daemonList(t, d, "/containers/json?all=1")
		s.events = daemonEvents(t, d, "container")
		s.images = images(t, d)
		s.hasSet = true
		es, _ := os.ReadDir(filepath.Join(d.Dir(), clientDir, "buildx", "instances"))
		for _, e := range es {
			s.instances = append(s.instances, e.Name())
		}
	}
	t.Cleanup(func() { testHookBeforeStop = nil })

	var log strings.Builder
	img, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	if !s.hasSet {
		t.Fatal("the hook before the daemon's stop did not run")
	}
	if len(s.containers) != 0 || len(s.events) != 0 {
		t.Errorf("the job's daemon had containers %v (events %q), want none: buildx must build with the daemon's own BuildKit", s.containers, s.events)
	}
	if n := dialed.Load(); n != 0 {
		t.Errorf("the build connected %d times to the telemetry endpoint and proxy of the gateway's environment, want never", n)
	}
	if len(s.instances) != 0 {
		t.Errorf("buildx recorded builder instances %q, want none", s.instances)
	}
	// The base, as the Dockerfile names it, and the result.
	if len(s.images) != 2 || !slices.Contains(s.images, "buildgw/job:"+tagName(req.ID)) {
		t.Errorf("the job's daemon holds images %q, want the base and the result only", s.images)
	}
	files := imageFiles(t, img)
	for p, want := range map[string]string{
		"stage":           "stage=final\n",
		"files/a+b":       "plus\n",
		"files/caf\u00e9": "accent\n",
	} {
		if files[p] != want {
			t.Errorf("image file %s = %q, want %q", p, files[p], want)
		}
	}
	l := log.String()
	if !strings.Contains(l, "ran-the-step") {
		t.Errorf("log lacks the RUN step's output:\n%s", l)
	}
	for _, line := range strings.Split(l, "\n") {
		if vertexDigest.MatchString(line) {
			t.Errorf("log keeps BuildKit's vertex digest line %q", line)
		}
	}
}

// TestDebianDocker builds with what the gateway runs by default, Debian's
// docker.io: dockerd 20.10 and its docker CLI (BuildKit v0.8 built in).
// Its BuildKit lacks TARGETSTAGE, which PredefinedArgs says.
func TestDebianDocker(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Available(context.Background()); err != nil {
		t.Fatalf("dind runner unavailable with docker.io: %v (run scripts/setup --test; it installs docker.io)", err)
	}
	if r.Buildx() != "" {
		t.Fatalf("New() builds with buildx %s, want the docker CLI", r.Buildx())
	}
	if got := r.PredefinedArgs(); slices.Contains(got, "TARGETSTAGE") || !slices.Contains(got, "TARGETOS") {
		t.Errorf("PredefinedArgs() on dockerd 20.10 = %q, want TARGETOS and not TARGETSTAGE", got)
	}
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)
	req := newRequest(t, reg, map[string]string{
		"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN echo built > /built && echo ran-the-step && cat /proc/self/oom_score_adj > /oom\nCOPY a /a\n",
		"a":          "a\n",
	}, map[string]string{"BASE": base})
	var log strings.Builder
	img, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	if files := imageFiles(t, img); files["built"] != "built\n" || files["a"] != "a\n" {
		t.Errorf("image files built, a = %q, %q; want \"built\\n\", \"a\\n\"", files["built"], files["a"])
	}
	// The legacy builder's RUN containers get the score the daemon asks
	// runc for, not the one they inherit.
	if got := imageFiles(t, img)["oom"]; got != "1000\n" {
		t.Errorf("RUN step's /proc/self/oom_score_adj = %q, want %q", got, "1000\n")
	}
	l := log.String()
	if !strings.Contains(l, "ran-the-step") {
		t.Errorf("log lacks the RUN step's output:\n%s", l)
	}
	for _, line := range strings.Split(l, "\n") {
		if vertexDigest.MatchString(line) {
			t.Errorf("log keeps BuildKit's vertex digest line %q", line)
		}
	}
}

// TestBuildxCommand checks buildx's command line and environment: the
// job's daemon by DOCKER_HOST, the default (docker driver) builder by
// name, the image into the daemon's store, nothing of the gateway's
// environment.
func TestBuildxCommand(t *testing.T) {
	r := &Runner{o: options{buildx: "/opt/buildx", docker: "/usr/bin/docker"}}
	d := &Daemon{dir: "/ws/dind"}
	req := &builder.Request{
		ContextDir: "/ws/context",
		Dockerfile: "Dockerfile",
		BuildArgs:  map[string]string{"A": "1"},
		Target:     "final",
	}
	t.Setenv("BUILDX_BUILDER", "elsewhere")
	bin, args, env := r.buildCommand(d, req, "buildgw/job:x")
	if bin != "/opt/buildx" {
		t.Errorf("buildCommand runs %s, want /opt/buildx", bin)
	}
	want := []string{
		"build", "--builder=default", "--load", "--provenance=false", "--sbom=false",
		"--file=/ws/context/Dockerfile", "--tag=buildgw/job:x", "--iidfile=/ws/dind/run/iid",
		"--progress=plain", "--network=host", "--pull=false",
		"--build-arg=A=1", "--target=final", "/ws/context",
	}
	if !slices.Equal(args, want) {
		t.Errorf("buildx args =\n  %q\nwant\n  %q", args, want)
	}
	wantEnv := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/ws/dind/home",
		"DOCKER_CONFIG=/ws/dind/client",
		"DOCKER_HOST=unix:///ws/dind/run/docker.sock",
		"BUILDX_NO_DEFAULT_ATTESTATIONS=1",
	}
	if !slices.Equal(env, wantEnv) {
		t.Errorf("buildx env =\n  %q\nwant\n  %q", env, wantEnv)
	}
	r.o.buildx = ""
	if bin, _, env := r.buildCommand(d, req, "buildgw/job:x"); bin != "/usr/bin/docker" || !slices.Contains(env, "DOCKER_BUILDKIT=1") || slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "DOCKER_HOST=") }) {
		t.Errorf("without buildx, buildCommand = %s with %q; want the docker CLI with DOCKER_BUILDKIT=1 and --host", bin, env)
	}
}

func TestMajorVersion(t *testing.T) {
	for out, want := range map[string]int{
		"Docker version 20.10.24+dfsg1, build 5d6db84\n": 20,
		"Docker version 28.5.2, build v28.5.2":           28,
		"Docker version v29.0.0, build x":                29,
		"Docker version library-import, build x":         0,
		"":                                               0,
	} {
		if got := majorVersion(out); got != want {
			t.Errorf("majorVersion(%q) = %d, want %d", out, got, want)
		}
	}
}

// TestDaemonOOMScore: every process of a job's daemon (the init, dockerd,
// containerd) is what the kernel's OOM killer picks first, on both
// engines; before, they had the gateway's score.
func TestDaemonOOMScore(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"docker.io", nil},
		{"pinned", engine(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(testenv.StateDir(t), "dind")
			d, err := r.StartDaemon(context.Background(), dir, DaemonConfig{})
			if err != nil {
				t.Fatalf("StartDaemon: %v", err)
			}
			t.Cleanup(func() { d.Stop() })
			all, err := hostfs.Procs()
			if err != nil {
				t.Fatal(err)
			}
			// The daemon's processes: the init and its descendants.
			mine := map[int]bool{d.Pid(): true}
			for grew := true; grew; {
				grew = false
				for _, p := range all {
					if mine[p.PPid] && !mine[p.Pid] {
						mine[p.Pid], grew = true, true
					}
				}
			}
			names := map[string]bool{}
			for _, p := range all {
				if !mine[p.Pid] {
					continue
				}
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.Pid))
				if err != nil {
					continue // gone meanwhile
				}
				names[p.Comm] = true
				if got := strings.TrimSpace(string(b)); got != "1000" {
					t.Errorf("%s (pid %d) oom_score_adj = %s, want 1000", p.Comm, p.Pid, got)
				}
			}
			if !names["dockerd"] || !names["containerd"] {
				t.Errorf("daemon processes = %v, want dockerd and containerd among them", names)
			}
		})
	}
}

package cmd

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/buildcontext"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
)

// bgSubmit is a buildctl-lite run in the background.
type bgSubmit struct {
	stdout, stderr syncBuffer
	done           chan struct{}
	code           int
}

// startCLI runs buildctl-lite with args until it exits or the test ends.
func startCLI(t *testing.T, args ...string) *bgSubmit {
	t.Helper()
	t.Setenv("BUILDGW_URL", "")
	t.Setenv("BUILDGW_TOKEN", "")
	t.Setenv("BUILDGW_CONFIG_DIR", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	s := &bgSubmit{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.code = Run(ctx, args, strings.NewReader(""), &s.stdout, &s.stderr)
	}()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// waitStderr waits until the run's stderr holds want, failing the test if
// it exits first or d (scaled) passes.
func (s *bgSubmit) waitStderr(t *testing.T, want string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(testenv.Scale(d)); !strings.Contains(s.stderr.String(), want); time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.done:
			t.Fatalf("submit exited %d before it said %q; stderr:\n%s", s.code, want, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("submit has not said %q after %s; stderr:\n%s", want, d, s.stderr.String())
		}
	}
}

// wait waits for the run to exit, for at most d (scaled).
func (s *bgSubmit) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return s.code
	case <-time.After(testenv.Scale(d)):
		t.Fatalf("submit still running after %s; stderr:\n%s", d, s.stderr.String())
		return 0
	}
}

// digest is the run's last stdout line, failing the test unless it exited
// 0 with a digest there.
func (s *bgSubmit) digest(t *testing.T) string {
	t.Helper()
	if s.code != 0 {
		t.Fatalf("submit = exit %d, want 0; stderr:\n%s", s.code, s.stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(s.stdout.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "sha256:") || len(last) != 71 {
		t.Fatalf("submit: last stdout line = %q, want the digest; stderr:\n%s", last, s.stderr.String())
	}
	return last
}

// errorLines are the lines of stderr that report an error.
func errorLines(stderr string) []string {
	var l []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "Error:") {
			l = append(l, line)
		}
	}
	return l
}

// waitConfig is a gateway that builds with kaniko from and to reg, for
// token, on listen (a free port if "").
func waitConfig(t *testing.T, reg, listen string) gateway.Config {
	cfg := gateway.DefaultConfig()
	if listen != "" {
		cfg.Listen = listen
	}
	cfg.Workspaces = "disk"
	cfg.Registries = map[string]gateway.Registry{reg: {Insecure: true}}
	cfg.Runners.Kaniko.Executor = testenv.Executor(t)
	cfg.Tokens = []gateway.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}}
	return cfg
}

// onlyBuild returns the one build the gateway at url knows of pushing to
// dest, failing the test if there are others.
func onlyBuild(t *testing.T, url, dest string) api.Build {
	t.Helper()
	c, err := client.New(url, token)
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var bs []api.Build
	for _, b := range all {
		if len(b.Destinations) == 1 && b.Destinations[0] == dest {
			bs = append(bs, b)
		}
	}
	if len(bs) != 1 {
		t.Fatalf("builds pushing to %s = %d, want 1: %+v", dest, len(bs), bs)
	}
	return bs[0]
}

// contextDir is a context whose Dockerfile is df.
func contextDir(t *testing.T, df string) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSubmitWaitsForGateway: a gateway whose address refuses connections
// for longer than the request's own retries (about 7.5 s) and then starts
// is waited for: submit says so on stderr, uploads once it is up, and
// prints the digest of the one build.
func TestSubmitWaitsForGateway(t *testing.T) {
	reg := testenv.Registry(t)
	busybox := testenv.Busybox(t, reg)
	addr, err := testenv.LoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	dest := reg + "/wait/up:1"
	dir := contextDir(t, "FROM "+busybox+"\nRUN echo built\n")
	s := startCLI(t, "submit", "--server", "http://"+addr, "--token", token, "--restart-wait", testenv.Scale(3*time.Minute).String(), "-t", dest, dir)

	// Past the request's own retries, which took about 7.5 s.
	s.waitStderr(t, "buildgw unreachable (connection refused); retrying for up to ", 30*time.Second)
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); strings.Count(s.stderr.String(), "buildgw unreachable") < 4; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("submit did not keep waiting; stderr:\n%s", s.stderr.String())
		}
	}
	g := testgateway.Start(t, waitConfig(t, reg, addr))

	s.wait(t, 3*time.Minute)
	digest := s.digest(t)
	if b := onlyBuild(t, g.URL, dest); b.Status != api.StatusSucceeded || b.Digest != digest {
		t.Errorf("build = %s %s, want succeeded with the printed %s", b.Status, b.Digest, digest)
	}
	for _, l := range strings.Split(s.stderr.String(), "\n") {
		if strings.Contains(l, "unreachable") && !strings.HasPrefix(l, "buildctl-lite: buildgw unreachable (connection refused); retrying for up to ") {
			t.Errorf("wait line = %q, want \"buildctl-lite: buildgw unreachable (connection refused); retrying for up to ...\"", l)
		}
	}
}

// TestSubmitWaitsOutDrainingGateway: a gateway that is shutting down (503,
// while its running build gets its grace) and is then replaced by another
// on its address is waited out: the build is submitted to the new one and
// built once.
func TestSubmitWaitsOutDrainingGateway(t *testing.T) {
	reg := testenv.Registry(t)
	busybox := testenv.Busybox(t, reg)
	old := testgateway.Start(t, waitConfig(t, reg, ""))
	addr := strings.TrimPrefix(old.URL, "http://")

	// A running build keeps the old gateway draining until it is released.
	c, err := client.New(old.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	busyDir := contextDir(t, waitGoDockerfile(busybox))
	busy, err := c.Submit(context.Background(), api.BuildSpec{Destinations: []string{reg + "/wait/busy:1"}}, func() io.ReadCloser {
		return buildcontext.Reader(context.Background(), busyDir)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(testenv.Scale(2 * time.Minute)); ; time.Sleep(50 * time.Millisecond) {
		b, err := c.Get(context.Background(), busy.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status == api.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy build %s after 2m, want running", b.Status)
		}
	}
	stopped := make(chan struct{})
	var stopErr error
	go func() { stopErr = old.Stop(); close(stopped) }()
	// Should the test end early, the old gateway is let go before its own
	// cleanup would stop it a second time.
	t.Cleanup(func() {
		if m, _ := filepath.Glob(filepath.Join(old.Config.StateDir, "*", "*", "context", "Dockerfile")); len(m) == 1 {
			os.WriteFile(filepath.Join(filepath.Dir(m[0]), "go"), nil, 0o644)
		}
		select {
		case <-stopped:
		case <-time.After(testenv.Scale(2 * time.Minute)):
			t.Errorf("the old gateway still draining 2m after its build was released")
		}
	})
	for deadline := time.Now().Add(testenv.Scale(30 * time.Second)); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(old.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old gateway is not draining 30s after it was stopped (%v)", err)
		}
	}

	dest := reg + "/wait/drained:1"
	s := startCLI(t, "submit", "--server", old.URL, "--token", token, "--restart-wait", testenv.Scale(3*time.Minute).String(), "-t", dest, contextDir(t, "FROM "+busybox+"\nRUN echo built\n"))
	// Past the request's own retries, which took about 7.5 s.
	s.waitStderr(t, "buildgw unreachable (503: gateway shutting down", 30*time.Second)
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); strings.Count(s.stderr.String(), "buildgw unreachable (503") < 4; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("submit did not keep waiting; stderr:\n%s", s.stderr.String())
		}
	}
	releaseBuild(t, old.Config.StateDir)
	select {
	case <-stopped:
		if stopErr != nil {
			t.Fatalf("stopping the old gateway: %v", stopErr)
		}
	case <-time.After(testenv.Scale(2 * time.Minute)):
		t.Fatal("the old gateway still draining 2m after its build was released")
	}
	g := testgateway.Start(t, waitConfig(t, reg, addr))

	s.wait(t, 3*time.Minute)
	digest := s.digest(t)
	if b := onlyBuild(t, g.URL, dest); b.Status != api.StatusSucceeded || b.Digest != digest {
		t.Errorf("build = %s %s, want succeeded with the printed %s", b.Status, b.Digest, digest)
	}
}

// TestSubmitAnswerLost: the gateway accepts a submission but its answer
// is lost (the connection breaks) and then it cannot be reached for a
// while. submit sends the context again with the same Idempotency-Key,
// gets the build the first attempt started, and it is built once.
func TestSubmitAnswerLost(t *testing.T) {
	reg := testenv.Registry(t)
	busybox := testenv.Busybox(t, reg)
	g := testgateway.Start(t, waitConfig(t, reg, ""))
	upstream := strings.TrimPrefix(g.URL, "http://")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	// The first connection reaches the gateway, but its answer does not
	// reach the client; then no connection is taken until relisten.
	lost := make(chan struct{})
	go func() {
		cc, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer close(lost)
		defer cc.Close()
		uc, err := net.Dial("tcp", upstream)
		if err != nil {
			return
		}
		defer uc.Close()
		go io.Copy(uc, cc)
		uc.Read(make([]byte, 1))
	}()
	var (
		mu     sync.Mutex
		conns  []net.Conn
		relist net.Listener
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if relist != nil {
			relist.Close()
		}
		for _, c := range conns {
			c.Close()
		}
	})

	dest := reg + "/wait/lost:1"
	s := startCLI(t, "submit", "--server", "http://"+addr, "--token", token, "--restart-wait", testenv.Scale(3*time.Minute).String(), "-t", dest, contextDir(t, "FROM "+busybox+"\nRUN echo built\n"))
	select {
	case <-lost:
	case <-time.After(testenv.Scale(time.Minute)):
		t.Fatalf("no answer to lose after 1m; stderr:\n%s", s.stderr.String())
	}
	// Past the request's own retries, which took about 7.5 s.
	s.waitStderr(t, "buildgw unreachable (connection refused)", 30*time.Second)
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); strings.Count(s.stderr.String(), "buildgw unreachable") < 4; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("submit did not keep waiting; stderr:\n%s", s.stderr.String())
		}
	}
	rl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	relist = rl
	mu.Unlock()
	go func() {
		for {
			cc, err := rl.Accept()
			if err != nil {
				return
			}
			uc, err := net.Dial("tcp", upstream)
			if err != nil {
				cc.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, cc, uc)
			mu.Unlock()
			go func() { io.Copy(uc, cc); uc.Close() }()
			go func() { io.Copy(cc, uc); cc.Close() }()
		}
	}()

	s.wait(t, 3*time.Minute)
	digest := s.digest(t)
	if b := onlyBuild(t, g.URL, dest); b.Status != api.StatusSucceeded || b.Digest != digest {
		t.Errorf("build = %s %s, want succeeded with the printed %s", b.Status, b.Digest, digest)
	}
}

// TestSubmitStopsAtRefusal: a gateway that comes up after a wait and
// refuses the build (403, 401) is not asked again: submit says why on one
// line, at once.
func TestSubmitStopsAtRefusal(t *testing.T) {
	reg := testenv.Registry(t)
	tests := []struct {
		name    string
		token   string
		dest    string
		wantErr string
	}{
		{"denied", token, "registry.example.com/other/app:1", "denied: "},
		{"unauthorized", "wrong-token", reg + "/wait/refused:1", "unauthorized: invalid token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := testenv.LoopbackAddr()
			if err != nil {
				t.Fatal(err)
			}
			s := startCLI(t, "submit", "--server", "http://"+addr, "--token", tc.token, "--restart-wait", testenv.Scale(3*time.Minute).String(), "-t", tc.dest, contextDir(t, "FROM "+reg+"/base:1\n"))
			s.waitStderr(t, "buildgw unreachable (connection refused)", 30*time.Second)
			testgateway.Start(t, waitConfig(t, reg, addr))
			up := time.Now()
			waits := strings.Count(s.stderr.String(), "buildgw unreachable")

			// The next try comes within 15 s; then nothing more.
			code := s.wait(t, time.Minute)
			stderr := s.stderr.String()
			if code == 0 {
				t.Errorf("submit refused with %s = exit 0, want non-zero", tc.wantErr)
			}
			if l := errorLines(stderr); len(l) != 1 || !strings.Contains(l[0], tc.wantErr) {
				t.Errorf("submit's error lines = %q, want one saying %q", l, tc.wantErr)
			}
			// At most the wait under way when the gateway started.
			if n := strings.Count(stderr, "buildgw unreachable"); n > waits+1 {
				t.Errorf("submit waited %d times after the gateway was up (%s), want at most 1 (the wait under way); stderr:\n%s", n-waits, time.Since(up).Round(time.Second), stderr)
			}
		})
	}
}

// TestSubmitGivesUp: a gateway that stays unreachable for the whole
// --restart-wait ends submit with a non-zero status and one line that
// names the gateway and the time waited, after one line per wait.
func TestSubmitGivesUp(t *testing.T) {
	addr, err := testenv.LoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	const budget = 4 * time.Second
	start := time.Now()
	s := startCLI(t, "submit", "--server", "http://"+addr, "--token", token, "--restart-wait", budget.String(), "-t", "registry.example.com/a/b:1", contextDir(t, "FROM scratch\n"))
	code := s.wait(t, time.Minute)
	took := time.Since(start)
	stderr := s.stderr.String()
	if code == 0 {
		t.Errorf("submit to an unreachable gateway = exit 0, want non-zero")
	}
	if took < budget {
		t.Errorf("submit gave up after %s, want it to wait %s", took.Round(time.Millisecond), budget)
	}
	want := "Error: submitting build: buildgw at http://" + addr + " still unreachable after " + budget.String() + " (connection refused); raise --restart-wait to wait longer"
	if l := errorLines(stderr); len(l) != 1 || l[0] != want {
		t.Errorf("submit's error lines = %q, want [%q]", l, want)
	}
	waits := 0
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if strings.HasPrefix(l, "Error:") {
			continue
		}
		waits++
		if !strings.HasPrefix(l, "buildctl-lite: buildgw unreachable (connection refused); retrying for up to ") {
			t.Errorf("stderr line = %q, want a wait line \"buildctl-lite: buildgw unreachable (connection refused); retrying for up to ...\"", l)
		}
	}
	// 1 s, 2 s and what is left, each with jitter; a last wait under a
	// second joins the one before.
	if waits < 2 || waits > 3 {
		t.Errorf("submit waited %d times in %s, want 2 or 3:\n%s", waits, budget, stderr)
	}
}

package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/workspace"
)

// TestLifecycleKillRestart kills the real gateway with SIGKILL while two
// builds run their RUN step, one waits in the queue and one context is
// half uploaded, then starts it again on the same state directory.
func TestLifecycleKillRestart(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true})
	ci, other := g.tokens["ci"], g.tokens["other"]

	// A build that finished before the crash.
	finished := g.submitRaw(t, ci, g.dest.Host+"/team/life:done", map[string]string{
		"Dockerfile": "FROM " + g.busybox + "\nRUN echo before > /before.txt\n",
	})
	before := g.waitBuild(t, ci, finished, 3*time.Minute)
	if before.Status != api.StatusSucceeded {
		t.Fatalf("build before the crash = %v %q, want succeeded", before.Status, before.Error)
	}

	// Two builds in RUN (concurrency is 2), one queued behind them.
	sleep := map[string]string{"Dockerfile": "FROM " + g.busybox + "\nRUN sleep 3600\n"}
	running := []struct{ id, token string }{
		{g.submitRaw(t, ci, g.dest.Host+"/team/life:sleep1", sleep), ci},
		{g.submitRaw(t, other, g.dest.Host+"/team/life:sleep2", sleep), other},
	}
	for _, r := range running {
		g.waitLogLine(t, r.token, r.id, "Running: [/bin/sh -c sleep 3600]", 3*time.Minute)
	}
	queued := g.submitRaw(t, ci, g.dest.Host+"/team/life:queued", map[string]string{
		"Dockerfile": "FROM " + g.busybox + "\nRUN echo requeued > /r.txt\n",
	})
	if b := g.status(t, ci, queued); b.Status != api.StatusQueued {
		t.Fatalf("third build with two running = %v, want queued", b.Status)
	}
	sandboxes := sandboxProcs(t, g.stateDir)
	if len(sandboxes) < 4 {
		t.Fatalf("found %d sandbox processes of two running builds, want at least unshare, init, kaniko and sleep for each", len(sandboxes))
	}
	t.Logf("%d sandbox processes before the kill: %+v", len(sandboxes), sandboxes)

	// A client that disconnects mid-upload leaves nothing behind.
	up := g.startUpload(t, ci, g.dest.Host+"/team/life:gone")
	g.waitWorkspaces(t, 4) // two running, one queued, the upload's
	up.abort()
	g.waitWorkspaces(t, 3)

	// SIGKILL mid-build and mid-upload.
	up = g.startUpload(t, ci, g.dest.Host+"/team/life:cut")
	g.waitWorkspaces(t, 4)
	g.proc.Process.Kill()
	<-g.exited
	up.abort()

	g.launch(t)
	for _, p := range sandboxes {
		if p.Alive() {
			t.Errorf("sandbox process %d (%s) of a killed gateway is still alive after the restart", p.Pid, p.Comm)
		}
	}
	for _, r := range running {
		b := g.status(t, r.token, r.id)
		if b.Status != api.StatusFailed || b.Error != "interrupted: gateway restarted" || b.FinishedAt == nil {
			t.Errorf("build %s running at the crash = %v %q, want failed %q", r.id, b.Status, b.Error, "interrupted: gateway restarted")
		}
		if log := g.logOf(t, r.token, r.id); !strings.Contains(log, "Running: [/bin/sh -c sleep 3600]") || !strings.Contains(log, "#buildgw interrupted: gateway restarted") {
			t.Errorf("log of %s after the restart lacks its RUN step or the interruption:\n%s", r.id, log)
		}
	}
	if b := g.status(t, ci, finished); b.Status != api.StatusSucceeded || b.Digest != before.Digest {
		t.Errorf("finished build after the restart = %v %s, want succeeded %s", b.Status, b.Digest, before.Digest)
	}
	if log := g.logOf(t, ci, finished); !strings.Contains(log, "#buildgw pushed "+before.Digest) {
		t.Errorf("log of the finished build after the restart lacks its push:\n%s", log)
	}
	after := g.waitBuild(t, ci, queued, 3*time.Minute)
	if after.Status != api.StatusSucceeded {
		t.Fatalf("build queued at the crash = %v %q, want succeeded after the restart", after.Status, after.Error)
	}
	img := g.pull(t, g.dest.Host+"/team/life:queued")
	if got := files(t, img)["r.txt"].content; got != "requeued\n" {
		t.Errorf("r.txt of the requeued build = %q, want %q", got, "requeued\n")
	}
	if d, _ := img.Digest(); d.String() != after.Digest {
		t.Errorf("pulled digest = %s, want the recorded %s", d, after.Digest)
	}
	// Nothing accepted was lost, nothing half-uploaded became a build.
	var ids []string
	for _, b := range g.listBuilds(t, ci) {
		ids = append(ids, b.ID)
	}
	if want := []string{queued, running[0].id, finished}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("builds of ci after the restart = %v, want %v", ids, want)
	}
	g.waitNoWorkspaces(t)
	if left := sandboxProcs(t, g.stateDir); len(left) != 0 {
		t.Errorf("processes in workspaces after the restart: %+v", left)
	}
	// The workspaces' tmpfs stays while the gateway runs; nothing else.
	mounts, err := hostfs.Mounts(g.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Mountpoint != g.stateDir && m.Mountpoint != workspace.NewLayout(g.stateDir).Mem {
			t.Errorf("mount under the state directory remains: %s (%s)", m.Mountpoint, m.FSType)
		}
	}
}

// submitRaw posts a build straight over HTTP, as curl would, and returns
// its ID.
func (g *gateway) submitRaw(t *testing.T, token, dest string, ctxFiles map[string]string) string {
	t.Helper()
	spec, _ := json.Marshal(api.BuildSpec{Destinations: []string{dest}})
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	w, _ := mw.CreateFormField("spec")
	w.Write(spec)
	w, _ = mw.CreateFormFile("context", "ctx.tar")
	tw := tar.NewWriter(w)
	for name, content := range ctxFiles {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content))})
		io.WriteString(tw, content)
	}
	tw.Close()
	mw.Close()
	status, raw := g.do(t, http.MethodPost, "/v1/builds", token, mw.FormDataContentType(), &body)
	var acc api.Accepted
	if status != http.StatusAccepted || json.Unmarshal(raw, &acc) != nil {
		t.Fatalf("POST /v1/builds = %d %s, want 202", status, raw)
	}
	return acc.ID
}

func (g *gateway) status(t *testing.T, token, id string) api.Build {
	t.Helper()
	status, raw := g.do(t, http.MethodGet, "/v1/builds/"+id, token, "", nil)
	var b api.Build
	if status != http.StatusOK || json.Unmarshal(raw, &b) != nil {
		t.Fatalf("GET /v1/builds/%s = %d %s, want 200", id, status, raw)
	}
	return b
}

func (g *gateway) waitBuild(t *testing.T, token, id string, d time.Duration) api.Build {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for {
		b := g.status(t, token, id)
		if b.Status.Final() {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %v after %s; log:\n%s", id, b.Status, d, g.logOf(t, token, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (g *gateway) logOf(t *testing.T, token, id string) string {
	t.Helper()
	_, raw := g.do(t, http.MethodGet, "/v1/builds/"+id+"/logs", token, "", nil)
	return string(raw)
}

func (g *gateway) waitLogLine(t *testing.T, token, id, line string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for !strings.Contains(g.logOf(t, token, id), line) {
		if time.Now().After(deadline) {
			t.Fatalf("log of %s lacks %q after %s:\n%s", id, line, d, g.logOf(t, token, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (g *gateway) waitWorkspaces(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(30 * time.Second))
	for len(g.jobsLeft(t)) != n {
		if time.Now().After(deadline) {
			t.Fatalf("workspaces = %v, want %d", g.jobsLeft(t), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// upload is a submission whose context stops half way.
type upload struct {
	pw   *io.PipeWriter
	done chan struct{}
}

// startUpload sends a spec and the first part of a large context, then
// holds the request open.
func (g *gateway) startUpload(t *testing.T, token, dest string) *upload {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	u := &upload{pw: pw, done: make(chan struct{})}
	req, err := http.NewRequest(http.MethodPost, g.url+"/v1/builds", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+token)
	go func() {
		defer close(u.done)
		resp, err := g.httpClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	go func() {
		spec, _ := json.Marshal(api.BuildSpec{Destinations: []string{dest}})
		w, _ := mw.CreateFormField("spec")
		w.Write(spec)
		w, _ = mw.CreateFormFile("context", "ctx.tar")
		tw := tar.NewWriter(w)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: 11})
		io.WriteString(tw, "FROM scratch")
		const size = 32 << 20
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big.bin", Mode: 0o644, Size: size})
		// Half of the file, then the request hangs until aborted.
		io.CopyN(tw, rand.Reader, size/2)
	}()
	return u
}

// abort breaks the upload off, as a client that goes away does.
func (u *upload) abort() {
	u.pw.CloseWithError(fmt.Errorf("client went away"))
	<-u.done
}

// sandboxProcs returns the processes working in a workspace under
// stateDir (unshare), in use or trashed, and all their descendants (the
// sandbox's init, kaniko and the RUN steps).
func sandboxProcs(t *testing.T, stateDir string) []hostfs.Process {
	t.Helper()
	l := workspace.NewLayout(stateDir)
	var prefixes []string
	for _, d := range append(l.WorkspaceDirs(), l.TrashDirs()...) {
		prefixes = append(prefixes, d+"/")
	}
	// Seen from outside its mount namespace (unshare enters it itself), a
	// sandbox's directory on a workspace tmpfs reads "/root" or
	// "/ID/root": the tmpfs's device tells.
	memDevs := map[uint64]bool{}
	ms, err := hostfs.Mounts(l.Mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		memDevs[unix.Mkdev(uint32(m.Major), uint32(m.Minor))] = true
	}
	ps, err := hostfs.Procs()
	if err != nil {
		t.Fatal(err)
	}
	parent := map[int]int{}
	in := map[int]bool{}
	all := map[int]hostfs.Process{}
	for _, p := range ps {
		if p.State == 'Z' {
			continue
		}
		parent[p.Pid] = p.PPid
		all[p.Pid] = p
		cwd, dev, err := p.Link("cwd")
		if err == nil {
			for _, pre := range prefixes {
				in[p.Pid] = in[p.Pid] || strings.HasPrefix(cwd, pre)
			}
		}
		if dev != 0 && memDevs[dev] {
			in[p.Pid] = true
		}
	}
	var out []hostfs.Process
	for pid := range all {
		for p := pid; p > 1; p = parent[p] {
			if in[p] {
				out = append(out, all[pid])
				break
			}
		}
	}
	return out
}

// TestLifecycleGracefulShutdown stops the real gateway with SIGTERM while
// two builds run and one waits: the running ones get the grace period
// (2s here), then are cancelled with the reason recorded; the waiting one
// is built after the next start.
func TestLifecycleGracefulShutdown(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true})
	ci := g.tokens["ci"]
	sleep := map[string]string{"Dockerfile": "FROM " + g.busybox + "\nRUN sleep 3600\n"}
	running := []string{
		g.submitRaw(t, ci, g.dest.Host+"/team/term:sleep1", sleep),
		g.submitRaw(t, ci, g.dest.Host+"/team/term:sleep2", sleep),
	}
	for _, id := range running {
		g.waitLogLine(t, ci, id, "Running: [/bin/sh -c sleep 3600]", 3*time.Minute)
	}
	queued := g.submitRaw(t, ci, g.dest.Host+"/team/term:queued", map[string]string{
		"Dockerfile": "FROM " + g.busybox + "\nRUN echo after > /after.txt\n",
	})
	sandboxes := sandboxProcs(t, g.stateDir)
	// A follower of the queued build, whose log does not end with the
	// shutdown, and buildctl-lite following it through the restart.
	followed := g.follow(t, ci, queued)
	type cliResult struct {
		stdout, stderr string
		code           int
	}
	cliDone := make(chan cliResult, 1)
	go func() {
		o, e, c := g.cli(t, ci, "logs", "-f", queued)
		cliDone <- cliResult{o, e, c}
	}()
	waitConnected(t, "buildctl-lite", g.url)

	start := time.Now()
	g.proc.Process.Signal(syscall.SIGTERM)
	// During the grace period status reads still work; new builds are
	// refused.
	g.waitDraining(t)
	if b := g.status(t, ci, running[0]); b.Status != api.StatusRunning {
		t.Errorf("build %s during the grace period = %v, want running", running[0], b.Status)
	}
	select {
	case <-g.exited:
	case <-time.After(testenv.Scale(20 * time.Second)):
		t.Fatal("gateway still running 20s after SIGTERM with a 2s grace period")
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("gateway exited %s after SIGTERM, before its 2s grace period", took)
	}
	if code := g.proc.ProcessState.ExitCode(); code != 0 {
		t.Errorf("gateway exit status after SIGTERM with a log follower = %d, want 0", code)
	}
	select {
	case log := <-followed:
		if !strings.Contains(log, "#buildgw gateway shutting down; reattach with: buildctl-lite logs -f "+queued) {
			t.Errorf("followed log of the queued build at shutdown = %q, want it to end saying how to reattach", log)
		}
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Error("log follower still open 10s after the gateway exited")
	}
	// SIGKILLed at the end of the grace period, a sandbox may still be
	// exiting when the gateway is gone, on a busy machine: polled.
	exited := time.Now()
	for _, p := range sandboxes {
		for deadline := time.Now().Add(testenv.Scale(10 * time.Second)); p.Alive(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("sandbox process %d (%s) survived the shutdown by 10s", p.Pid, p.Comm)
				break
			}
		}
	}
	if d := time.Since(exited); d > 100*time.Millisecond {
		t.Logf("the last sandbox process was gone %s after the gateway", d.Round(time.Millisecond))
	}
	if ws := g.jobsLeft(t); len(ws) != 1 {
		t.Errorf("workspaces after shutdown = %v, want only the queued build's", ws)
	}

	g.launch(t)
	for _, id := range running {
		b := g.status(t, ci, id)
		if !b.Interrupted() || !strings.Contains(b.Error, "grace period") {
			t.Errorf("build %s running at SIGTERM = %v %q, want interrupted naming the grace period", id, b.Status, b.Error)
		}
	}
	if b := g.waitBuild(t, ci, queued, 3*time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("build queued at SIGTERM = %v %q, want succeeded after the restart", b.Status, b.Error)
	}
	if got := files(t, g.pull(t, g.dest.Host+"/team/term:queued"))["after.txt"].content; got != "after\n" {
		t.Errorf("after.txt of the build queued at SIGTERM = %q, want %q", got, "after\n")
	}
	// buildctl-lite waited out the restart and reattached where the log
	// left off: its output is the whole log, and the line that said so.
	select {
	case r := <-cliDone:
		const marker = "#buildgw gateway shutting down; reattach with: buildctl-lite logs -f "
		i := strings.Index(r.stdout, marker)
		if r.code != 0 || i < 0 {
			t.Fatalf("buildctl-lite logs -f across the restart = exit %d, stdout %q, stderr %q; want 0 and the reattach line", r.code, r.stdout, r.stderr)
		}
		j := i + strings.Index(r.stdout[i:], "\n") + 1
		if got, want := r.stdout[:i]+r.stdout[j:], g.logOf(t, ci, queued); got != want {
			t.Errorf("buildctl-lite logs -f across the restart, less the reattach line =\n%s\nwant the build's log:\n%s", got, want)
		}
	case <-time.After(testenv.Scale(time.Minute)):
		t.Error("buildctl-lite logs -f still running a minute after the build ended")
	}
	g.waitNoWorkspaces(t)
}

// follow streams id's log with follow=1 and sends what it read once the
// stream ends.
func (g *gateway) follow(t *testing.T, token, id string) <-chan string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, g.url+"/v1/builds/"+id+"/logs?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := g.httpClient().Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET logs?follow=1 of %s = %v, %v, want 200", id, resp, err)
	}
	out := make(chan string, 1)
	go func() {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- string(b)
	}()
	return out
}

// waitConnected waits until a process named comm has a connection to the
// gateway at url open.
func waitConnected(t *testing.T, comm, url string) {
	t.Helper()
	addr := strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
	for deadline := time.Now().Add(testenv.Scale(30 * time.Second)); ; time.Sleep(50 * time.Millisecond) {
		out, err := exec.Command("ss", "-Htnp", "state", "established", "dst", addr).Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		if strings.Contains(string(out), `"`+comm+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no connection to %s after 30s", comm, addr)
		}
	}
}

// waitDraining waits until the gateway, told to stop, reports itself not
// ready while it still serves.
func (g *gateway) waitDraining(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(testenv.Scale(5 * time.Second)); ; time.Sleep(20 * time.Millisecond) {
		resp, err := g.httpClient().Get(g.url + "/readyz")
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				var r api.Readiness
				if err := json.Unmarshal(raw, &r); err != nil || r.Ready || !r.ShuttingDown {
					t.Fatalf("GET /readyz after SIGTERM = 503 %s (%v), want an api.Readiness shutting down", raw, err)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz after SIGTERM = %v, %v, want 503 while the gateway drains", resp, err)
		}
	}
}

// TestLifecycleSecondSignal: a second SIGTERM during the grace period
// stops the gateway at once; the running build is recorded as
// interrupted at the next start.
func TestLifecycleSecondSignal(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true, shutdownGrace: 10 * time.Minute})
	ci := g.tokens["ci"]
	id := g.submitRaw(t, ci, g.dest.Host+"/team/term:second", map[string]string{"Dockerfile": "FROM " + g.busybox + "\nRUN sleep 3600\n"})
	g.waitLogLine(t, ci, id, "Running: [/bin/sh -c sleep 3600]", 3*time.Minute)

	g.proc.Process.Signal(syscall.SIGTERM)
	g.waitDraining(t)
	// Draining: the build runs on and can be read.
	if b := g.status(t, ci, id); b.Status != api.StatusRunning {
		t.Fatalf("build during the grace period = %v, want running", b.Status)
	}
	start := time.Now()
	g.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Fatal("gateway still running 10s after a second SIGTERM")
	}
	t.Logf("gateway exited %s after the second SIGTERM, status %d", time.Since(start), g.proc.ProcessState.ExitCode())
	if g.proc.ProcessState.ExitCode() == 0 {
		t.Errorf("gateway stopped by a second SIGTERM exited 0, want a failure status")
	}
	g.launch(t)
	if b := g.waitBuild(t, ci, id, time.Minute); b.Status != api.StatusFailed || !strings.Contains(b.Error, "interrupted") {
		t.Errorf("build running at the second SIGTERM = %v %q, want failed as interrupted", b.Status, b.Error)
	}
}

// TestLifecycleTimeout gives the token a 3s build timeout by policy: a
// RUN sleep 3600 ends failed with a timeout, its sandbox and workspace
// gone.
func TestLifecycleTimeout(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true, policy: func(g *gateway) testgateway.Policy {
		return testgateway.Policy{Rules: []testgateway.Rule{{
			Name:  "short-builds",
			Match: map[string]string{"kind": "token"},
			Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/team/**"}, From: []string{g.base.Host}, Limits: &testgateway.Limits{Timeout: "3s"}},
		}}}
	}})
	ci := g.tokens["ci"]
	start := time.Now()
	id := g.submitRaw(t, ci, g.dest.Host+"/team/slow:1", map[string]string{"Dockerfile": "FROM " + g.busybox + "\nRUN sleep 3600\n"})
	g.waitLogLine(t, ci, id, "Running: [/bin/sh -c sleep 3600]", 3*time.Minute)
	sandbox := sandboxProcs(t, g.stateDir)
	if len(sandbox) < 3 {
		t.Fatalf("found %d sandbox processes of a running build, want unshare, init, kaniko and sleep", len(sandbox))
	}
	b := g.waitBuild(t, ci, id, time.Minute)
	if b.Status != api.StatusFailed || !strings.HasPrefix(b.Error, "timeout") {
		t.Errorf("RUN sleep 3600 with a 3s timeout = %v %q, want failed with a timeout", b.Status, b.Error)
	}
	if took := time.Since(start); took > testenv.Scale(45*time.Second) {
		t.Errorf("build with a 3s timeout ended after %s", took)
	}
	g.waitNoWorkspaces(t)
	for _, p := range sandbox {
		if p.Alive() {
			t.Errorf("sandbox process %d (%s) survived the timeout", p.Pid, p.Comm)
		}
	}
}

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestSubmitWaitsOutOutage: the gateway is killed while a client waits
// for its queued build, and stays away for 30 s, far longer than the
// client's request retries. The client waits, reattaches, and prints the
// digest of its build, which ran once, after the restart.
func TestSubmitWaitsOutOutage(t *testing.T) {
	const outage = 30 * time.Second
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true, config: func(_ *gateway, c *buildgw.Config) { c.Concurrency = 1 }})
	ci := g.tokens["ci"]

	// The one worker is busy until the restart interrupts it.
	busy := g.submitRaw(t, ci, g.dest.Host+"/team/outage:busy", map[string]string{"Dockerfile": "FROM " + g.busybox + "\nRUN echo busy; sleep 3600\n"})
	g.waitLogLine(t, ci, busy, "busy", 3*time.Minute)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+g.busybox+"\nRUN echo queued > /queued.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := g.startClient(t, ci, "submit", "--restart-wait", "2m", "-t", g.dest.Host+"/team/outage:queued", dir)
	cmd, stdout, stderr, exited := c.cmd, c.stdout, c.stderr, c.exited

	var queued string
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); queued == ""; time.Sleep(100 * time.Millisecond) {
		for _, b := range g.listBuilds(t, ci) {
			if b.ID != busy && b.Status == api.StatusQueued {
				queued = b.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no queued build a minute after submit started; its stderr:\n%s", stderr.String())
		}
	}

	g.gw.Cmd.Process.Kill()
	<-g.gw.Exited()
	down := time.Now()
	// The gateway is away for the outage: nothing to wait for but time.
	time.Sleep(outage)
	select {
	case <-exited:
		t.Fatalf("submit gave up %s into a %s outage (exit %d); stderr:\n%s", time.Since(down).Round(time.Second), outage, cmd.ProcessState.ExitCode(), stderr.String())
	default:
	}
	g.launch(t)

	select {
	case <-exited:
	case <-time.After(testenv.Scale(4 * time.Minute)):
		t.Fatalf("submit still running 4 minutes after the restart; stderr:\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("submit across a %s outage exited %d, want 0; stderr:\n%s", outage, code, stderr.String())
	}
	digest := lastLine(stdout.String())
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("submit across a %s outage: last stdout line = %q, want the digest", outage, digest)
	}
	if strings.Contains(stderr.String(), "submitting it again") {
		t.Errorf("submit sent its queued build again, want it only reattached:\n%s", stderr.String())
	}
	// The queued build ran once, after the restart; nothing else was made.
	var ran []api.Build
	for _, b := range g.listBuilds(t, ci) {
		if b.ID != busy {
			ran = append(ran, b)
		}
	}
	if len(ran) != 1 || ran[0].ID != queued || ran[0].Status != api.StatusSucceeded || ran[0].Digest != digest {
		t.Fatalf("builds besides the busy one after the outage = %+v, want only %s, succeeded with digest %s", ran, queued, digest)
	}
	if ran[0].StartedAt == nil || ran[0].StartedAt.Before(down) {
		t.Errorf("queued build started at %v, want after the gateway went down at %v", ran[0].StartedAt, down)
	}
	if b := g.status(t, ci, busy); !b.Interrupted() {
		t.Errorf("busy build after the restart = %v %q, want interrupted", b.Status, b.Error)
	}
	fs := files(t, g.pull(t, g.dest.Host+"/team/outage:queued@"+digest))
	if got := fs["queued.txt"].content; got != "queued\n" {
		t.Errorf("queued.txt in the pushed image = %q, want %q", got, "queued\n")
	}
}

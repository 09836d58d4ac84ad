package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestResubmitAfterRestart: a build that a gateway restart interrupts is
// sent again by the submit that still holds its context, with the same
// Idempotency-Key, and runs to success once; logs -f of the interrupted
// build, which has no context to send, exits 4 with a hint.
func TestResubmitAfterRestart(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true})
	ci := g.tokens["ci"]
	dir := t.TempDir()
	// The first build waits for go, which only the context sent again has.
	df := "FROM " + g.busybox + "\n" +
		"RUN echo waiting for go; i=0; while [ ! -e /workspace/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; test -e /workspace/go\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	c := g.startClient(t, ci, "submit", "--restart-wait", "2m", "-t", g.dest.Host+"/team/resubmit:1", dir)
	cmd, stdout, stderr, exited := c.cmd, c.stdout, c.stderr, c.exited

	var first string
	accepted := testenv.Scale(time.Minute)
	for deadline := time.Now().Add(accepted); first == ""; time.Sleep(100 * time.Millisecond) {
		if bs := g.listBuilds(t, ci); len(bs) == 1 {
			first = bs[0].ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("no build accepted %s after submit started; its stderr:\n%s", accepted, stderr.String())
		}
	}
	g.waitLogLine(t, ci, first, "waiting for go", 3*time.Minute)
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g.gw.Cmd.Process.Kill()
	<-g.gw.Exited()
	g.launch(t)

	select {
	case <-exited:
	case <-time.After(testenv.Scale(4 * time.Minute)):
		t.Fatalf("submit still running %s after the restart; stderr:\n%s", testenv.Scale(4*time.Minute), stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("submit across a restart exited %d, want 0; stderr:\n%s", code, stderr.String())
	}
	digest := lastLine(stdout.String())
	if !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("submit across a restart: last stdout line = %q, want the digest", digest)
	}
	if !strings.Contains(stderr.String(), "submitting it again (1 of 3)") {
		t.Errorf("submit's stderr does not say it submitted the build again:\n%s", stderr.String())
	}
	// One build the restart interrupted, one that ran to success after it.
	bs := g.listBuilds(t, ci)
	if len(bs) != 2 {
		t.Fatalf("builds after the restart: %+v, want 2", bs)
	}
	if bs[1].ID != first || !bs[1].Interrupted() {
		t.Errorf("first build = %s %v %q, want %s interrupted", bs[1].ID, bs[1].Status, bs[1].Error, first)
	}
	if bs[0].Status != api.StatusSucceeded || bs[0].Digest != digest || bs[0].StartedAt == nil {
		t.Errorf("build sent again = %v %s, want succeeded with the printed digest %s", bs[0].Status, bs[0].Digest, digest)
	}

	// Without the context there is nothing to send again.
	_, errOut, code := g.cli(t, ci, "logs", "-f", first)
	if code != 4 || !strings.Contains(errOut, "run the submit that started it again") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("logs -f of the interrupted build: exit %d, stderr %q; want 4 and a one-line hint", code, errOut)
	}
}

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestSecondGatewayDuringDindBuild: a second gateway started on the state
// directory of one whose dind build is running refuses to start, naming
// the lock, and touches nothing: the build's daemon runs on and the
// build succeeds. (Before, the second gateway reaped the first's job
// daemons before it found the directory in use.)
func TestSecondGatewayDuringDindBuild(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true})
	ci := g.tokens["ci"]
	dir := t.TempDir()
	df := "FROM " + g.busybox + "\nRUN echo started; sleep 8; echo done > /done.txt\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := g.dest.Host + "/team/second:dind"
	c := g.startClient(t, ci, "submit", "--runner", "dind", "-t", ref, dir)
	cmd, stdout, stderr, exited := c.cmd, c.stdout, c.stderr, c.exited
	var id string
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); id == ""; time.Sleep(100 * time.Millisecond) {
		if bs := g.listBuilds(t, ci); len(bs) == 1 {
			id = bs[0].ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("no build accepted a minute after submit started; its stderr:\n%s", stderr.String())
		}
	}
	g.waitLogLine(t, ci, id, "started", 3*time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(30*time.Second))
	defer cancel()
	second := exec.CommandContext(ctx, filepath.Join(g.bin, "buildgw"), "serve", "--config", g.gw.ConfigFile)
	out, err := second.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("second gateway on the same state directory = %v (%v), want it to refuse at once; output:\n%s", err, ctx.Err(), out)
	}
	if !strings.Contains(string(out), "in use") || !strings.Contains(string(out), "buildgw.lock") {
		t.Errorf("second gateway's output does not say the state directory is in use, naming the lock:\n%s", out)
	}

	select {
	case <-exited:
	case <-time.After(testenv.Scale(3 * time.Minute)):
		t.Fatalf("submit still running 3 minutes after the second gateway; stderr:\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("dind build beside a second gateway: submit exited %d, want 0; stderr:\n%s", code, stderr.String())
	}
	digest := lastLine(stdout.String())
	if b := g.status(t, ci, id); b.Runner != "dind" || b.Status != api.StatusSucceeded || b.Digest != digest {
		t.Fatalf("dind build beside a second gateway = %s %v %q %s, want a dind build succeeded with the printed digest %s", b.Runner, b.Status, b.Error, b.Digest, digest)
	}
	if got := files(t, g.pull(t, ref+"@"+digest))["done.txt"].content; got != "done\n" {
		t.Errorf("done.txt in the pushed image = %q, want %q", got, "done\n")
	}
}

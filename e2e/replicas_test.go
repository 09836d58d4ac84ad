package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/internal/testpg"
	"github.com/buildgw/buildgw/jobs/pgstore"
	"github.com/buildgw/buildgw/workspace"
)

// TestReplicasTakeOverKilledBuild: two gateways share one PostgreSQL. A
// client submits through a loopback proxy that, like a Service, sends
// each connection to the first replica that answers; the replica running
// the build is killed with SIGKILL mid-build. The other takes the build
// over and runs it again from its stored context; it ends once, and the
// waiting submit prints the digest of the image it pushed. Then a build
// the second runs is cancelled, and its log read, through the first.
func TestReplicasTakeOverKilledBuild(t *testing.T) {
	pg := testpg.Start(t)
	dsn := pg.NewDatabase(t)
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := func(_ *gateway, c *buildgw.Config) {
		c.Store.PostgresDSNFile = dsnFile
		c.Concurrency = 1
	}
	g := startGatewayWith(t, gatewayOptions{plainHTTP: true, config: shared})
	ci := g.tokens["ci"]
	first := g.gw.Config.Listen

	// The second replica: the same identities, policy and registries, a
	// state directory and address of its own.
	cfg := g.gw.Config
	cfg.StateDir = filepath.Join(testenv.StateDir(t), "state")
	t.Cleanup(func() { unix.Unmount(workspace.NewLayout(cfg.StateDir).Mem, unix.MNT_DETACH) })
	cfg.Listen = testenv.FreeAddr(t)
	cfg.Audit.File = filepath.Join(t.TempDir(), "audit.log")

	// Only the first replica runs when the build is submitted: it claims it.
	g.url = "http://" + startFailoverProxy(t, first, cfg.Listen)
	dir := t.TempDir()
	df := "FROM " + g.busybox + "\nRUN echo build-started; sleep 15; echo done > /done.txt\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := g.dest.Host + "/team/replicas:v1"
	c := g.startClient(t, ci, "submit", "--restart-wait", "3m", "-t", ref, dir)
	var id string
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); id == ""; time.Sleep(100 * time.Millisecond) {
		if bs := g.listBuilds(t, ci); len(bs) == 1 {
			id = bs[0].ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("no build accepted a minute after submit started; its stderr:\n%s", c.stderr.String())
		}
	}
	g.waitLogLine(t, ci, id, "build-started", 3*time.Minute)

	second := testgateway.Start(t, cfg, testgateway.WithBinary(filepath.Join(g.bin, "buildgw")))
	g.gw.Cmd.Process.Kill()
	<-g.gw.Exited()
	killed := time.Now()

	select {
	case <-c.exited:
	case <-time.After(testenv.Scale(4 * time.Minute)):
		t.Fatalf("submit still running 4 minutes after the replica was killed; stderr:\n%s\nsecond replica:\n%s", c.stderr.String(), tail(second.Log(), 40))
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("submit exited %d after its replica was killed, want 0; stderr:\n%s\nsecond replica:\n%s", code, c.stderr.String(), tail(second.Log(), 40))
	}
	t.Logf("submit ended %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	digest := lastLine(c.stdout.String())
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("last stdout line = %q, want the digest; stderr:\n%s", digest, c.stderr.String())
	}
	if strings.Contains(c.stderr.String(), "submitting it again") {
		t.Errorf("submit sent the build again, want it taken over by the other replica:\n%s", c.stderr.String())
	}

	// One build, ended once, after the kill, by the second replica.
	bs := g.listBuilds(t, ci)
	if len(bs) != 1 || bs[0].ID != id || bs[0].Status != api.StatusSucceeded || bs[0].Digest != digest {
		t.Fatalf("builds after the takeover = %+v, want only %s, succeeded with digest %s", bs, id, digest)
	}
	if bs[0].StartedAt == nil || bs[0].StartedAt.Before(killed) {
		t.Errorf("build started at %v, want the second run, after the kill at %v", bs[0].StartedAt, killed)
	}
	st, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	var finals, requeued int
	for _, tr := range rec.Transitions {
		if tr.Status.Final() {
			finals++
		}
		if tr.Status == api.StatusQueued && strings.Contains(tr.Reason, "stopped renewing its lease") {
			requeued++
		}
	}
	if finals != 1 || requeued != 1 {
		t.Errorf("transitions = %+v, want one requeue after the kill and one final state", rec.Transitions)
	}
	log := g.logOf(t, ci, id)
	for _, want := range []string{"build-started", "queued again (was running)", "(attempt 2)", "#buildgw pushed"} {
		if !strings.Contains(log, want) {
			t.Errorf("build log lacks %q:\n%s", want, log)
		}
	}
	if got := files(t, g.pull(t, ref+"@"+digest))["done.txt"].content; got != "done\n" {
		t.Errorf("done.txt in the pushed image = %q, want %q", got, "done\n")
	}

	// A build the second replica runs (the only one alive) is cancelled
	// through the first, started again: it reaps what its sandbox left,
	// leaves the finished build be and answers for the other's.
	slow := g.submitRaw(t, ci, g.dest.Host+"/team/replicas:slow", map[string]string{"Dockerfile": "FROM " + g.busybox + "\nRUN echo slow-started; sleep 600\n"})
	g.waitLogLine(t, ci, slow, "slow-started", 3*time.Minute)
	g.launch(t)
	g.url = "http://" + first
	if b := g.status(t, ci, id); b.Status != api.StatusSucceeded || b.Digest != digest {
		t.Errorf("build after the killed replica restarted = %s %s, want succeeded %s", b.Status, b.Digest, digest)
	}
	if stdout, stderr, code := g.cli(t, ci, "cancel", slow); code != 0 {
		t.Fatalf("buildctl-lite cancel through the other replica exited %d: %s %s", code, stdout, stderr)
	}
	if b := g.waitBuild(t, ci, slow, time.Minute); b.Status != api.StatusCancelled {
		t.Errorf("build cancelled through the other replica = %s (%s), want cancelled", b.Status, b.Error)
	}
	if log := g.logOf(t, ci, slow); !strings.Contains(log, "#buildgw cancelled") {
		t.Errorf("log of the cancelled build, read from the other replica, lacks the cancel:\n%s", log)
	}
}

// startFailoverProxy forwards each connection on a loopback address to
// the first of backends that accepts it, as a Service sends traffic only
// to live replicas, and returns the address.
func startFailoverProxy(t *testing.T, backends ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				for _, b := range backends {
					out, err := net.DialTimeout("tcp", b, 2*time.Second)
					if err != nil {
						continue
					}
					defer out.Close()
					// Either side ending ends both, as a dead backend's
					// connections end for its clients.
					done := make(chan struct{}, 2)
					go func() { io.Copy(out, in); done <- struct{}{} }()
					go func() { io.Copy(in, out); done <- struct{}{} }()
					<-done
					return
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// Package testbuildkit runs BuildKit, the engine `docker build` uses
// today, as a reference builder for tests and benchmarks: buildkitd and
// buildctl built by scripts/setup --test from the moby/buildkit version
// pinned in go.mod, an OCI worker on runc, a private root and socket per
// daemon. RUN steps get no network (force-network-mode=none); images are
// pushed to loopback registries over plain HTTP, which BuildKit allows for
// localhost without configuration.
package testbuildkit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
)

// Daemon is a running buildkitd.
type Daemon struct {
	Addr string // unix:// address of its gRPC socket
	Pid  int    // for peak-RSS readings
	dir  string
	ctl  string
}

// Bins returns the paths of buildkitd and buildctl that scripts/setup
// --test installs, or fails the test naming the command that installs them.
func Bins(tb testing.TB) (buildkitd, buildctl string) {
	tb.Helper()
	dir := filepath.Join(testenv.ModuleRoot(tb), ".tools", "bin")
	buildkitd, buildctl = filepath.Join(dir, "buildkitd"), filepath.Join(dir, "buildctl")
	for _, p := range []string{buildkitd, buildctl} {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("%s not found: run scripts/setup --test (it builds BuildKit from the version in go.mod)", p)
		}
	}
	if _, err := exec.LookPath("runc"); err != nil {
		tb.Fatal("runc not found: run scripts/setup --test (it installs Debian's runc)")
	}
	return buildkitd, buildctl
}

// Start runs a buildkitd with its own root under a temporary directory
// until the test ends, and waits until it answers.
func Start(tb testing.TB) *Daemon {
	tb.Helper()
	bkd, ctl := Bins(tb)
	// A unix socket path must stay under 108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "buildkitd-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	d := &Daemon{Addr: "unix://" + filepath.Join(dir, "buildkitd.sock"), dir: dir, ctl: ctl}
	cfg := fmt.Sprintf(`root = %q
[grpc]
  address = [%q]
[worker.oci]
  enabled = true
  gc = false
[worker.containerd]
  enabled = false
`, filepath.Join(dir, "root"), d.Addr)
	if err := os.WriteFile(filepath.Join(dir, "buildkitd.toml"), []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "buildkitd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bkd, "--config", filepath.Join(dir, "buildkitd.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting buildkitd: %v", err)
	}
	d.Pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(testenv.Scale(20 * time.Second)):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		// Its snapshots may hold overlay mounts; they go with the daemon.
		exec.Command("umount", "-R", "-l", filepath.Join(dir, "root")).Run()
	})

	deadline := time.Now().Add(testenv.Scale(60 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(10*time.Second))
		out, err := exec.CommandContext(ctx, ctl, "--addr", d.Addr, "debug", "workers").CombinedOutput()
		cancel()
		// A header line, then one line per worker: ready once the OCI
		// worker is listed.
		if err == nil && bytes.Count(bytes.TrimSpace(out), []byte("\n")) >= 1 {
			return d
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logf.Name())
			tb.Fatalf("buildkitd exited: %v\n%s", err, tail(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			tb.Fatalf("buildkitd did not answer within %s: %s\n%s", testenv.Scale(60*time.Second), out, tail(log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Build is one `buildctl build` of a Dockerfile.
type Build struct {
	Context    string            // the build context directory
	Dockerfile string            // the directory holding the Dockerfile; Context when empty
	Args       map[string]string // --build-arg
	Target     string
	NoCache    bool
	Push       string // the reference to push to; the build only checks when empty
}

// Build runs b and returns buildctl's combined output with its error.
func (d *Daemon) Build(ctx context.Context, b Build) ([]byte, error) {
	df := b.Dockerfile
	if df == "" {
		df = b.Context
	}
	args := []string{"--addr", d.Addr, "build", "--progress", "plain",
		"--frontend", "dockerfile.v0",
		"--local", "context=" + b.Context, "--local", "dockerfile=" + df,
		"--opt", "force-network-mode=none"}
	for k, v := range b.Args {
		args = append(args, "--opt", "build-arg:"+k+"="+v)
	}
	if b.Target != "" {
		args = append(args, "--opt", "target="+b.Target)
	}
	if b.NoCache {
		args = append(args, "--no-cache")
	}
	if b.Push != "" {
		args = append(args, "--output", "type=image,name="+b.Push+",push=true,registry.insecure=true")
	}
	out, err := exec.CommandContext(ctx, d.ctl, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("buildctl build %s: %w", b.Context, err)
	}
	return out, nil
}

// Prune drops the daemon's build cache, so the next build is cold.
func (d *Daemon) Prune(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, d.ctl, "--addr", d.Addr, "prune", "--all").CombinedOutput()
	if err != nil {
		return fmt.Errorf("buildctl prune: %w: %s", err, tail(out))
	}
	return nil
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return strings.TrimSpace(s)
}

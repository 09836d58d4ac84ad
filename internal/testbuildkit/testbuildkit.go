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
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	buildkitd, buildctl, err := BinsIn(testenv.ModuleRoot(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return buildkitd, buildctl
}

// BinsIn returns the paths of buildkitd and buildctl that scripts/setup
// --test installs under the repository root, or an error naming the
// command that installs them, for programs without a testing.TB.
func BinsIn(root string) (buildkitd, buildctl string, err error) {
	dir := filepath.Join(root, ".tools", "bin")
	buildkitd, buildctl = filepath.Join(dir, "buildkitd"), filepath.Join(dir, "buildctl")
	for _, p := range []string{buildkitd, buildctl} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%s not found: run scripts/setup --test (it builds BuildKit from the version in go.mod)", p)
		}
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return "", "", errors.New("runc not found: run scripts/setup --test (it installs Debian's runc)")
	}
	return buildkitd, buildctl, nil
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
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(60*time.Second))
	defer cancel()
	d, stop, err := Launch(ctx, bkd, ctl, dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Error(err)
		}
	})
	return d
}

// Launch runs buildkitd with its root, socket, config and log under dir
// (keep it short: a unix socket path must stay under 108 bytes) and waits
// until it answers or ctx ends. stop ends the daemon and unmounts what its
// snapshots left; dir is the caller's to remove.
func Launch(ctx context.Context, buildkitd, buildctl, dir string) (d *Daemon, stop func() error, err error) {
	d = &Daemon{Addr: "unix://" + filepath.Join(dir, "buildkitd.sock"), dir: dir, ctl: buildctl}
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
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "buildkitd.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(buildkitd, "--config", filepath.Join(dir, "buildkitd.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Killed with this process, should it die before stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("starting buildkitd: %w", err)
	}
	d.Pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() error {
		cmd.Process.Signal(os.Interrupt)
		var err error
		select {
		case <-exited:
		case <-time.After(testenv.Scale(20 * time.Second)):
			cmd.Process.Kill()
			<-exited
			err = fmt.Errorf("buildkitd did not stop within %s; killed", testenv.Scale(20*time.Second))
		}
		logf.Close()
		// Its snapshots may hold overlay mounts; they go with the daemon.
		exec.Command("umount", "-R", "-l", filepath.Join(dir, "root")).Run()
		return err
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()

	for {
		actx, cancel := context.WithTimeout(ctx, testenv.Scale(10*time.Second))
		out, err := exec.CommandContext(actx, buildctl, "--addr", d.Addr, "debug", "workers").CombinedOutput()
		cancel()
		// A header line, then one line per worker: ready once the OCI
		// worker is listed.
		if err == nil && bytes.Count(bytes.TrimSpace(out), []byte("\n")) >= 1 {
			return d, stop, nil
		}
		select {
		case err := <-exited:
			exited <- err // for stop
			log, _ := os.ReadFile(logf.Name())
			return nil, nil, fmt.Errorf("buildkitd exited: %v\n%s", err, tail(log))
		case <-ctx.Done():
			log, _ := os.ReadFile(logf.Name())
			return nil, nil, fmt.Errorf("buildkitd did not answer: %w: %s\n%s", ctx.Err(), out, tail(log))
		case <-time.After(100 * time.Millisecond):
		}
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

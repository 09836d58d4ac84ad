package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/buildgw/buildgw/internal/testenv"
)

// TestDevMode runs the embedded default as the README does: serve --dev,
// read dev.env, import busybox, build examples/hello, pull it back.
func TestDevMode(t *testing.T) {
	testenv.RequireSandbox(t)
	bin := binDir(t)
	exe := testenv.Executor(t)
	state := filepath.Join(testenv.StateDir(t), "state")
	dev := startDev(t, bin, state, exe)
	envFile, log, cmd, exited := dev.envFile, dev.log, dev.cmd, dev.exited
	env := readEnv(t, envFile)
	for _, k := range []string{"BUILDGW_URL", "BUILDGW_TOKEN", "BUILDGW_REGISTRY", "BUILDGW_REGISTRY_USER", "BUILDGW_REGISTRY_PASSWORD"} {
		if env[k] == "" {
			t.Fatalf("dev.env lacks %s: %v", k, env)
		}
	}
	if !strings.HasPrefix(env["BUILDGW_URL"], "http://127.0.0.1:") || !strings.HasPrefix(env["BUILDGW_REGISTRY"], "127.0.0.1:") {
		t.Errorf("dev.env = %v, want loopback addresses", env)
	}
	if fi, _ := os.Stat(envFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of dev.env = %v, want 0600 (it holds the token)", fi.Mode().Perm())
	}

	base := env["BUILDGW_REGISTRY"] + "/library/busybox:latest"
	// Any local user reaches loopback: without dev.env's account the
	// registry refuses to take (or give) an image.
	baseRef, _ := name.ParseReference(base)
	fake, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []authn.Authenticator{authn.Anonymous, &authn.Basic{Username: env["BUILDGW_REGISTRY_USER"], Password: "guess"}} {
		var terr *transport.Error
		if err := remote.Write(baseRef, fake, remote.WithAuth(a)); !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("push to the embedded registry as %v = %v, want 401", a, err)
		}
	}
	imp := exec.Command(filepath.Join(bin, "buildgw"), "import", "--busybox", testenv.BusyboxBinary(t), base)
	imp.Env = append(os.Environ(), devEnv(env)...)
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("buildgw import: %v\n%s", err, out)
	}
	regAuth := remote.WithAuth(&authn.Basic{Username: env["BUILDGW_REGISTRY_USER"], Password: env["BUILDGW_REGISTRY_PASSWORD"]})
	if _, err := remote.Head(baseRef); err == nil {
		t.Errorf("HEAD %s without credentials succeeded, want 401", base)
	}
	ref := env["BUILDGW_REGISTRY"] + "/examples/hello:dev"
	sub := exec.Command(filepath.Join(bin, "buildctl-lite"), "submit", "--build-arg", "BASE="+base, "-t", ref, filepath.Join(testenv.ModuleRoot(t), "examples", "hello"))
	sub.Env = append(os.Environ(), "BUILDGW_URL="+env["BUILDGW_URL"], "BUILDGW_TOKEN="+env["BUILDGW_TOKEN"])
	out, err := sub.Output()
	if err != nil {
		t.Fatalf("submit examples/hello: %v\n%s", err, log.String())
	}
	digest := lastLine(string(out))
	r, _ := name.ParseReference(ref)
	img, err := remote.Image(r, regAuth)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if d, _ := img.Digest(); d.String() != digest {
		t.Errorf("digest of %s = %s, want %s", ref, d, digest)
	}
	fs := files(t, img)
	if got := fs["app/GREETING.txt"].content; !strings.HasPrefix(got, "HELLO FROM BUILDGW\n") {
		t.Errorf("file app/GREETING.txt = %q, want it to start with HELLO FROM BUILDGW", got)
	}
	// Blobs live on disk under the state directory.
	if m, _ := filepath.Glob(filepath.Join(state, "registry", "*")); len(m) == 0 {
		t.Errorf("no registry blobs under %s", state)
	}

	cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(testenv.Scale(20 * time.Second)):
		t.Fatal("dev gateway did not stop on interrupt")
	}
	if _, err := os.Stat(envFile); !os.IsNotExist(err) {
		t.Errorf("dev.env still exists after shutdown (err %v), want it removed", err)
	}
}

// devEnv is what sourcing dev.env puts in the environment.
func devEnv(env map[string]string) []string {
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	return kv
}

func readEnv(t *testing.T, p string) map[string]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestDevScriptReusesKeptGateway reruns scripts/dev while a kept dev
// gateway runs: it must build through that gateway and leave its dev.env
// and log alone (it used to delete the one, truncate the other and then
// fail on the store lock, stranding the gateway). Once that gateway is
// gone (killed outright, dev.env left behind), it must start afresh.
func TestDevScriptReusesKeptGateway(t *testing.T) {
	testenv.RequireSandbox(t)
	bin := binDir(t)
	exe := testenv.Executor(t)
	root := testenv.ModuleRoot(t)

	// A checkout of its own, so the test's .buildgw link stays out of the
	// real one; the host set-up that scripts/dev begins with is done.
	tree := t.TempDir()
	for _, d := range []string{"scripts", "bin", "examples"} {
		if err := os.Mkdir(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := os.ReadFile(filepath.Join(root, "scripts", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(tree, "scripts", "dev"), script, 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "scripts", "setup"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	for _, b := range []string{"buildgw", "buildctl-lite"} {
		must(t, os.Symlink(filepath.Join(bin, b), filepath.Join(tree, "bin", b)))
	}
	must(t, os.Symlink(exe, filepath.Join(tree, "bin", "kaniko-executor")))
	must(t, os.Symlink(filepath.Join(root, "examples", "hello"), filepath.Join(tree, "examples", "hello")))

	state := filepath.Join(testenv.StateDir(t), "state")
	must(t, os.Mkdir(state, 0o711))

	// The kept gateway, as an earlier scripts/dev --keep left it.
	const keptLog = "kept gateway's log\n"
	logFile := filepath.Join(state, "gateway.log")
	must(t, os.WriteFile(logFile, []byte(keptLog), 0o644))
	dev := startDev(t, bin, state, exe)
	envFile, log, cmd, exited := dev.envFile, dev.log, dev.cmd, dev.exited
	envBefore, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := readEnv(t, envFile)

	runDev := func(args ...string) (string, error) {
		c := exec.Command(filepath.Join(tree, "scripts", "dev"), args...)
		c.Env = append(os.Environ(), "BUILDGW_STATE_DIR="+state)
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			return "", fmt.Errorf("%v\nstderr:\n%s", err, stderr.String())
		}
		return string(out), nil
	}

	out, err := runDev("--keep")
	if err != nil {
		t.Fatalf("scripts/dev --keep with a kept gateway running: %s\ngateway log:\n%s", err, log.String())
	}
	digest := lastLine(out)
	ref := env["BUILDGW_REGISTRY"] + "/examples/hello:dev"
	r, _ := name.ParseReference(ref)
	desc, err := remote.Head(r, remote.WithAuth(&authn.Basic{Username: env["BUILDGW_REGISTRY_USER"], Password: env["BUILDGW_REGISTRY_PASSWORD"]}))
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	if desc.Digest.String() != digest {
		t.Errorf("digest of %s = %s, scripts/dev printed %q", ref, desc.Digest, digest)
	}
	if b, err := os.ReadFile(envFile); err != nil || string(b) != string(envBefore) {
		t.Errorf("dev.env after rerun = %q (err %v), want it untouched: %q", b, err, envBefore)
	}
	if b, err := os.ReadFile(logFile); err != nil || string(b) != keptLog {
		t.Errorf("gateway.log after rerun = %q (err %v), want it untouched: %q", b, err, keptLog)
	}
	select {
	case <-exited:
		t.Fatalf("kept gateway exited during the rerun:\n%s", log.String())
	default:
	}

	// Killed outright, the gateway leaves dev.env behind; a rerun must
	// see nothing answers and start its own.
	cmd.Process.Kill()
	<-exited
	if _, err := os.Stat(envFile); err != nil {
		t.Fatalf("dev.env after kill -9: %v, want it left behind", err)
	}
	out, err = runDev()
	if err != nil {
		t.Fatalf("scripts/dev after the kept gateway died: %s", err)
	}
	if d := lastLine(out); !strings.HasPrefix(d, "sha256:") {
		t.Errorf("scripts/dev printed %q last, want a digest", d)
	}
	if _, err := os.Stat(envFile); !os.IsNotExist(err) {
		t.Errorf("dev.env after scripts/dev stopped its gateway: err %v, want it removed", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// devGateway is a running `buildgw serve --dev`.
type devGateway struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when it has exited
	envFile string        // its dev.env
	log     *syncWriter   // its stderr
}

// startDev starts `buildgw serve --dev` on state, stopped when t ends, and
// waits for its dev.env.
func startDev(t *testing.T, bin, state, exe string) *devGateway {
	t.Helper()
	d := &devGateway{
		cmd:     exec.Command(filepath.Join(bin, "buildgw"), "serve", "--dev", "--state-dir", state, "--executor", exe),
		exited:  make(chan struct{}),
		envFile: filepath.Join(state, "dev.env"),
		log:     &syncWriter{w: &strings.Builder{}},
	}
	d.cmd.Stderr = d.log
	must(t, d.cmd.Start())
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
	})
	waitFor(t, 15*time.Second, "dev.env", func() bool {
		select {
		case <-d.exited:
			t.Fatalf("dev gateway exited:\n%s", d.log.String())
		default:
		}
		_, err := os.Stat(d.envFile)
		return err == nil
	})
	return d
}

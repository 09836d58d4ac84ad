// Package testenv provides the real components buildgw's tests run
// against: the kaniko executor built from the pinned version, registries
// (go-containerregistry's in-memory one, and Debian's docker-registry with
// htpasswd and TLS), and base images made locally. Everything listens on
// loopback only.
//
// A missing component is a test failure, not a skip: .ci/run installs
// them all (scripts/setup).
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/internal/hostfs"
)

// SandboxUser is the user root runs sandboxes as in tests; scripts/setup
// creates it with subordinate ranges.
const SandboxUser = "buildgw-sandbox"

// ModuleRoot returns the repository's root directory.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the module root")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var buildMu sync.Mutex

// Executor returns the kaniko executor: $BUILDGW_KANIKO_EXECUTOR, or
// bin/kaniko-executor built from cmd/kaniko-executor (the build cache makes
// this quick after the first time).
//
// As root, an executor the sandbox user cannot reach (a checkout under a
// 0700 home, say) is copied once to a world-searchable directory, as an
// operator would install it: else every build would copy it into its own
// workspace, which a small per-build tmpfs cannot hold.
func Executor(t testing.TB) string {
	t.Helper()
	p := os.Getenv("BUILDGW_KANIKO_EXECUTOR")
	if p == "" {
		p = Build(t, "./cmd/kaniko-executor", "kaniko-executor")
	}
	if os.Geteuid() != 0 || worldExecutable(p) {
		return p
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading the executor: %v", err)
	}
	sum := sha256.Sum256(b)
	dir := filepath.Join(os.TempDir(), "buildgw-test-executor-"+hex.EncodeToString(sum[:8]))
	exe := filepath.Join(dir, "kaniko-executor")
	if fi, err := os.Stat(exe); err == nil && fi.Size() == int64(len(b)) {
		return exe
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := exe + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, exe); err != nil {
		t.Fatal(err)
	}
	return exe
}

// worldExecutable reports whether anyone may execute p: search permission
// for others on every directory on the way, execute on the file.
func worldExecutable(p string) bool {
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	for ; ; abs = filepath.Dir(abs) {
		fi, err := os.Stat(abs)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if abs == "/" {
			return true
		}
	}
}

// Build builds the package pkg of this module into bin/out, statically,
// and returns the binary's path.
func Build(t testing.TB, pkg, out string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	root := ModuleRoot(t)
	bin := filepath.Join(root, "bin", out)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	return bin
}

// RequireSandbox fails the test unless rootless sandboxes can run here:
// uidmap's helpers, and the sandbox user when running as root.
func RequireSandbox(t testing.TB) {
	t.Helper()
	for _, b := range []string{"unshare", "newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found: run scripts/setup (it installs uidmap)", b)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup(SandboxUser); err != nil {
			t.Fatalf("sandbox user %s missing: run scripts/setup", SandboxUser)
		}
	}
}

// Registry starts go-containerregistry's in-memory registry on loopback
// and returns its host:port.
func Registry(t testing.TB) string {
	t.Helper()
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// Busybox pushes a busybox base image (from Debian's busybox-static) to
// host and returns its reference.
func Busybox(t testing.TB, host string) string {
	t.Helper()
	img, err := baseimage.Busybox(BusyboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(host+"/library/busybox:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing busybox to %s: %v", host, err)
	}
	return ref.String()
}

// BusyboxBinary returns the path of Debian's statically linked busybox
// (package busybox-static; the dynamic busybox package would not run in
// an image without its libc).
func BusyboxBinary(t testing.TB) string {
	t.Helper()
	const p = "/bin/busybox"
	b, err := os.ReadFile(p)
	if err != nil || bytes.Contains(b, []byte("/lib64/ld-linux")) || bytes.Contains(b, []byte("/lib/ld-linux")) {
		t.Fatal("static busybox not found at /bin/busybox: run scripts/setup (it installs busybox-static)")
	}
	return p
}

// StateDir returns a new directory the sandbox user can traverse (mode
// 0711; t.TempDir's parent is 0700), removed when the test ends.
//
// Mounts left below it are detached first: a test that kills a gateway
// with -9 leaves its per-build tmpfs workspaces mounted (a restarted
// gateway would sweep them), and RemoveAll cannot remove a mount point.
func StateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "buildgw-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hostfs.UnmountUnder(dir); err != nil {
			t.Logf("removing the state directory: %v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("removing the state directory: %v", err)
		}
	})
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

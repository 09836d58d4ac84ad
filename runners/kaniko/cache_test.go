package kaniko

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/basestore"
	"github.com/buildgw/buildgw/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestLayerCachePerTenant builds the same Dockerfile for two tenants. A
// tenant's rebuild reuses its own cached RUN layer; the other tenant's
// first build, with the same cache key, must run the step itself.
func TestLayerCachePerTenant(t *testing.T) {
	exe, regHost, base, store, cacheDir := cacheTestEnv(t)
	r, err := New(WithExecutor(exe), WithLayerCache(filepath.Join(cacheDir, "layers")))
	if err != nil {
		t.Fatal(err)
	}
	// The step's output differs every time it really runs.
	const dockerfile = "ARG BASE\nFROM ${BASE}\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n"
	build := func(tenant string) (stamp, log string) {
		t.Helper()
		req := netRequest(t, r, dockerfile, "", map[string]string{"BASE": base}, regHost)
		req.Tenant = tenant
		img, log := buildWithBases(t, r, store, req)
		s, err := fileOf(img, "stamp")
		if err != nil {
			t.Fatal(err)
		}
		return s, log
	}
	a1, _ := build("namespace_path:team-a")
	a2, logA2 := build("namespace_path:team-a")
	b1, logB1 := build("namespace_path:team-b")
	if a2 != a1 {
		t.Errorf("team-a's rebuild ran the step again (%q, first %q): want the cached layer\n%s", a2, a1, logA2)
	}
	if b1 == a1 {
		t.Errorf("team-b's first build got team-a's cached layer (%q)\n%s", b1, logB1)
	}
	// Without a tenant, no cache at all.
	n1, _ := build("")
	n2, _ := build("")
	if n1 == n2 || n1 == a1 || n1 == b1 {
		t.Errorf("builds without a tenant share a layer: %q, %q (tenants' %q, %q)", n1, n2, a1, b1)
	}
}

// cacheTestEnv gives a cache test the executor, a registry with a busybox
// base, a base image store and a directory for caches. Not t.TempDir: the
// sandbox user must traverse to its cache, as it does in a gateway's state
// directory (0711).
func cacheTestEnv(t *testing.T) (exe, regHost, base string, store *basestore.Store, cacheDir string) {
	t.Helper()
	testenv.RequireSandbox(t)
	exe = testenv.Executor(t)
	regHost = testenv.Registry(t)
	base = testenv.Busybox(t, regHost)
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cacheDir, err = os.MkdirTemp("", "buildgw-cachetest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cacheDir) })
	os.Chmod(cacheDir, 0o711)
	return exe, regHost, base, store, cacheDir
}

// buildWithBases has the store fetch req's base images, as the gateway
// does, then builds, failing the test with the log if the build fails.
func buildWithBases(t *testing.T, r *Runner, store *basestore.Store, req *builder.Request) (v1.Image, string) {
	t.Helper()
	b, err := store.Prepare(context.Background(), req, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	req.BaseImages = b
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img, err := r.Build(ctx, req, &log)
	if err != nil {
		t.Fatalf("Build for %s: %v\n%s", req.Tenant, err, log.String())
	}
	return img, log.String()
}

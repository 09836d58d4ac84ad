package kaniko

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/policy"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
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
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	img, err := r.Build(ctx, req, &log)
	if err != nil {
		t.Fatalf("Build for %s: %v\n%s", req.Tenant, err, log.String())
	}
	return img, log.String()
}

// TestLayerCachePoisoning runs the cache poisoning sequence with the
// tenants the policy's default cache.scope gives GitLab jobs. Feature
// branches of the project and of another project of its group build the
// release's Dockerfile first, one of them with a RUN step that attacks
// the layer cache from inside: it overwrites the layer blobs of every
// entry it can reach with a layer of its own, plants an entry under an
// invented key and writes 32 MiB of junk into /kaniko/cache. The same
// attack then comes from a protected build (a hostile dependency). The
// protected release builds must run the step themselves, then reuse their
// own cached layer, unaltered, as a valid image; the junk must have been
// the attacking builds' (in their workspaces), never the shared cache's.
func TestLayerCachePoisoning(t *testing.T) {
	exe, regHost, base, store, cacheDir := cacheTestEnv(t)
	shared := filepath.Join(cacheDir, "layers")
	r, err := New(WithExecutor(exe), WithLayerCache(shared))
	if err != nil {
		t.Fatal(err)
	}
	gitlab := func(project, ref, protected string) string {
		return policy.CacheProjectRefClass.Tenant(auth.Identity{
			Name: "gitlab:project_path:" + project + ":ref:" + ref, Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com",
			Attributes: map[string]string{"project_path": project, "project_id": "id-" + project, "namespace_path": "grp", "ref": ref, "ref_protected": protected},
		})
	}
	release, feature, otherFeature := gitlab("grp/app", "main", "true"), gitlab("grp/app", "feature", "false"), gitlab("grp/other", "feature", "false")
	const victim = "ARG BASE\nFROM ${BASE}\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n"
	const attack = `ARG BASE
FROM ${BASE}
COPY poison.tgz /poison.tgz
RUN { mount -o remount,rw /kaniko/cache-shared || mount -o remount,bind,rw /kaniko/cache-shared; } && echo remounted; \
    for f in /kaniko/cache/*/blobs/sha256/* /kaniko/cache-shared/*/blobs/sha256/*; do \
      if [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" = 1f8b ]; then cat /poison.tgz > "$f" && echo "overwrote $f"; fi; \
    done; \
    mkdir -p /kaniko/cache/layers:0000000000000000000000000000000000000000000000000000000000000000/blobs/sha256; \
    dd if=/dev/zero of=/kaniko/cache/junk bs=1M count=32; \
    echo attacked > /attacked
`
	// The poisoned layer comes with the context: busybox has no gzip.
	var poison bytes.Buffer
	zw := gzip.NewWriter(&poison)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "stamp", Mode: 0o644, Size: 7, Typeflag: tar.TypeReg})
	tw.Write([]byte("POISON\n"))
	tw.Close()
	zw.Close()
	build := func(tenant, dockerfile string) (stamp, log string) {
		t.Helper()
		req := netRequest(t, r, dockerfile, "", map[string]string{"BASE": base}, regHost)
		req.Tenant = tenant
		if err := os.WriteFile(filepath.Join(req.ContextDir, "poison.tgz"), poison.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		img, log := buildWithBases(t, r, store, req)
		if dockerfile == attack {
			if _, err := os.Stat(filepath.Join(req.Workspace, "layer-cache", "junk")); err != nil {
				t.Errorf("the junk the build wrote into /kaniko/cache is not in its workspace (%v), so its workspace limit does not count it\n%s", err, log)
			}
			if n := treeSize(shared); n >= 32<<20 {
				t.Errorf("the shared layer cache holds %d bytes after a build wrote 32 MiB of junk into /kaniko/cache, want the junk left out\n%s", n, log)
			}
			return "", log
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("build for %s is not a valid image: %v\n%s", tenant, err, log)
		}
		stamp, err := fileOf(img, "stamp")
		if err != nil {
			t.Fatal(err)
		}
		return stamp, log
	}
	other, _ := build(otherFeature, victim)
	branch, _ := build(feature, victim)
	// The shared cache's read-only bind was made in the sandbox's user
	// namespace: only the seccomp filter keeps its root from undoing it.
	checkRemount := func(log string) {
		t.Helper()
		if strings.Contains(log, "\nremounted") {
			t.Errorf("a RUN step remounted /kaniko/cache-shared writable:\n%s", log)
		}
	}
	_, attackLog := build(feature, attack)
	checkRemount(attackLog)
	if branch == other {
		t.Errorf("grp/app's feature branch got grp/other's cached layer (%q)", other)
	}
	p1, log1 := build(release, victim)
	if p1 == other || p1 == branch {
		t.Errorf("protected build of grp/app got a feature branch's layer: /stamp %q (grp/other %q, grp/app feature %q)\nattack log:\n%s\nrelease log:\n%s", p1, other, branch, attackLog, log1)
	}
	_, attackLog = build(release, attack)
	checkRemount(attackLog)
	p2, log2 := build(release, victim)
	if p2 != p1 {
		t.Errorf("protected rebuild after the attack: /stamp = %q, want the first protected build's %q (cached)\nattack log:\n%s\nrebuild log:\n%s", p2, p1, attackLog, log2)
	}
	if !strings.Contains(log2, "Using caching version of cmd") {
		t.Errorf("protected rebuild did not use the cache:\n%s", log2)
	}
}

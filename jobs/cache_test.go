package jobs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/runners/kaniko"
)

// TestManagerNoCache checks that the spec's no_cache reaches the runner:
// an identical rebuild is served from the owner's cached result, the same
// build with no_cache runs every step again.
func TestManagerNoCache(t *testing.T) {
	testenv.RequireSandbox(t)
	// The sandbox user must reach its layer cache, as in a state
	// directory (0711).
	cacheDir, err := os.MkdirTemp("", "buildgw-nocachetest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cacheDir) })
	os.Chmod(cacheDir, 0o711)
	te := testmanager.New(t, testmanager.Options{Kaniko: []kaniko.Option{
		kaniko.WithLayerCache(filepath.Join(cacheDir, "layers")),
		kaniko.WithResultCache(filepath.Join(cacheDir, "results"), 0),
	}})
	e := &env{m: te.M, stateDir: te.StateDir, l: te.Layout, reg: te.Registry}
	base := testenv.Busybox(t, e.reg)
	// The step's output differs every time it really runs.
	archive := busyboxContext(t, base, "cat /proc/sys/kernel/random/uuid > /stamp")
	build := func(repo string, noCache bool) (digest, log string) {
		t.Helper()
		j := e.submit(t, "alice", api.BuildSpec{Destinations: []string{e.dest(repo)}, NoCache: noCache}, archive)
		b := wait(t, j, 3*time.Minute)
		if b.Status != api.StatusSucceeded {
			t.Fatalf("build %s = %s (%s), want succeeded\n%s", repo, b.Status, b.Error, logOf(t, j))
		}
		return b.Digest, logOf(t, j)
	}
	const cached = "kaniko not run"
	d1, l1 := build("first", false)
	d2, l2 := build("again", false)
	d3, l3 := build("nocache", true)
	if strings.Contains(l1, cached) {
		t.Errorf("first build served from a cache:\n%s", l1)
	}
	if !strings.Contains(l2, cached) || d2 != d1 {
		t.Errorf("identical rebuild = %s (log says cached: %v), want %s from the cached result\n%s", d2, strings.Contains(l2, cached), d1, l2)
	}
	if strings.Contains(l3, cached) || d3 == d1 {
		t.Errorf("no_cache build = %s (log says cached: %v), want every step run afresh (not %s)\n%s", d3, strings.Contains(l3, cached), d1, l3)
	}
	if got := registryDigest(t, e.dest("again")); got != d1 {
		t.Errorf("pushed digest of the cached rebuild = %s, want %s", got, d1)
	}
}

// TestManagerLayerCacheCountsAgainstWorkspace has a RUN step write 50 MiB
// into kaniko's layer cache directory under a workspace limit of 20 MiB:
// the build is stopped for its workspace, and nothing of what it wrote is
// left in the layer cache.
func TestManagerLayerCacheCountsAgainstWorkspace(t *testing.T) {
	cacheDir, err := os.MkdirTemp("", "buildgw-cachelimittest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cacheDir) })
	os.Chmod(cacheDir, 0o711)
	layers := filepath.Join(cacheDir, "layers")
	r := newRestartable(t, kaniko.WithLayerCache(layers))
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithJobTimeout(2*time.Minute),
		jobs.WithWorkspaceLimit(20<<20), jobs.WithDiskCheckInterval(200*time.Millisecond))
	// The sleep keeps the build going, so only the limit can end it early.
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/cachebomb:v1"}},
		busyboxContext(t, base, "dd if=/dev/zero of=/kaniko/cache/big bs=1M count=50 && sleep 30"))
	b := wait(t, j, 2*time.Minute)
	const want = "the build's workspace exceeded 20 MiB (workspace_max_bytes); see the build log"
	if b.Status != api.StatusFailed || b.Error != want {
		t.Errorf("build writing 50 MiB into /kaniko/cache = %v %q, want %v %q; log:\n%s", b.Status, b.Error, api.StatusFailed, want, logOf(t, j))
	}
	var left int64
	filepath.WalkDir(layers, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				left += info.Size()
			}
		}
		return nil
	})
	if left > 1<<20 {
		t.Errorf("the layer cache holds %d bytes after the build, want nothing of what it wrote", left)
	}
}

package builder_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
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
	e := &env{m: te.M, stateDir: te.StateDir, reg: te.Registry}
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

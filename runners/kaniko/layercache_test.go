package kaniko

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLayerCacheEviction fills two tenants' layer caches beyond the bound:
// the oldest entries of the idle tenant go, the busy tenant's stay.
func TestLayerCacheEviction(t *testing.T) {
	dir := t.TempDir()
	lc := &layerCaches{dir: dir, maxBytes: 3 << 10}
	old := time.Now().Add(-time.Hour)
	mk := func(tenant, entry string, age time.Duration) string {
		p := filepath.Join(dir, tenant, entry)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "blob"), make([]byte, 1<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old.Add(age), old.Add(age))
		return p
	}
	busy := mk("busy", "layers:a", 0) // the oldest of all, but in use
	idle1 := mk("idle", "layers:b", time.Minute)
	idle2 := mk("idle", "layers:c", 2*time.Minute)
	idle3 := mk("idle", "layers:d", 3*time.Minute)
	lc.enter(filepath.Join(dir, "busy"))
	lc.enter(filepath.Join(dir, "idle"))
	if err := lc.leave(filepath.Join(dir, "idle")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{busy: true, idle1: false, idle2: true, idle3: true} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("after eviction, %s kept = %v, want %v", filepath.Base(p), got, want)
		}
	}
	// Once the busy tenant is idle, it is the oldest and goes first.
	mk("idle", "layers:e", 4*time.Minute)
	if err := lc.leave(filepath.Join(dir, "busy")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(busy); err == nil {
		t.Errorf("oldest entry of a tenant that became idle was kept")
	}
	if s := treeSize(dir); s > lc.maxBytes {
		t.Errorf("layer caches hold %d bytes, bound %d", s, lc.maxBytes)
	}
}

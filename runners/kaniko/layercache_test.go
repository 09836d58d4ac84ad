package kaniko

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
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

// TestLayerCacheImport imports what a build left in its cache directory:
// only well-formed entries whose every blob is a regular file inside the
// entry with its descriptor's size and digest, never replacing an entry;
// and a copying populate hands them out again checked.
func TestLayerCacheImport(t *testing.T) {
	shared, job := t.TempDir(), t.TempDir()
	lc := &layerCaches{dir: filepath.Dir(shared), maxBytes: 1 << 20}
	key := func(c byte) string { return "layers:" + strings.Repeat(string(c), 64) }
	write := func(dir, name string, size int64) (string, v1.Image) {
		t.Helper()
		img, err := random.Image(size, 2)
		if err != nil {
			t.Fatal(err)
		}
		p, err := layout.Write(filepath.Join(dir, name), empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, name), img
	}
	layerOf := func(entry string, img v1.Image) string {
		ls, _ := img.Layers()
		d, _ := ls[0].Digest()
		return filepath.Join(entry, "blobs", "sha256", d.Hex)
	}
	_, good := write(job, key('a'), 2048)
	tampered, img := write(job, key('b'), 2048)
	os.WriteFile(layerOf(tampered, img), []byte("not the layer"), 0o644)
	linked, _ := write(job, key('c'), 2048)
	elsewhere := filepath.Join(t.TempDir(), "blobs")
	os.Rename(filepath.Join(linked, "blobs"), elsewhere)
	os.Symlink(elsewhere, filepath.Join(linked, "blobs"))
	fifo := filepath.Join(job, key('d'))
	os.Mkdir(fifo, 0o755)
	if err := unix.Mkfifo(filepath.Join(fifo, "index.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	write(job, key('e'), 1<<20) // two layers: over the bound
	os.Symlink("/kaniko/cache-shared/"+key('f'), filepath.Join(job, key('f')))
	os.WriteFile(filepath.Join(job, "junk"), make([]byte, 1024), 0o644)
	// An entry the shared cache has already is never replaced.
	existing, _ := write(shared, key('1'), 2048)
	before, _ := os.ReadFile(filepath.Join(existing, "index.json"))
	write(job, key('1'), 2048)

	done := make(chan struct{})
	var n int
	var refused []error
	var err error
	go func() {
		defer close(done)
		n, refused, err = lc.importNew(t.Context(), shared, job)
	}()
	select {
	case <-done:
	case <-time.After(testenv.Scale(30 * time.Second)):
		t.Fatal("importNew blocked (on the FIFO?)")
	}
	if err != nil || n != 1 {
		t.Fatalf("importNew = %d, %v, %v; want 1 entry", n, refused, err)
	}
	if len(refused) != 5 {
		t.Errorf("importNew refused %v, want the tampered, linked, FIFO, oversized entries and the junk", refused)
	}
	names, _ := entries(shared)
	if want := []string{key('1'), key('a')}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("shared cache holds %v, want %v", names, want)
	}
	if after, _ := os.ReadFile(filepath.Join(existing, "index.json")); string(after) != string(before) {
		t.Errorf("an existing entry was replaced")
	}
	filepath.WalkDir(filepath.Join(shared, key('a')), func(p string, d fs.DirEntry, err error) error {
		info, _ := d.Info()
		if want := fs.FileMode(0o444); !d.IsDir() && info.Mode().Perm() != want {
			t.Errorf("imported %s has mode %v, want %v", p, info.Mode().Perm(), want)
		}
		if want := fs.FileMode(0o755); d.IsDir() && info.Mode().Perm()&0o022 != 0 {
			t.Errorf("imported directory %s has mode %v, want at most %v", p, info.Mode().Perm(), want)
		}
		return nil
	})

	// A copying populate (a gateway that is not root) checks what it copies.
	job2 := t.TempDir()
	if n, err := lc.populate(t.Context(), shared, job2, true); err != nil || n != 2 {
		t.Fatalf("populate(copy) = %d, %v; want 2", n, err)
	}
	lp, err := layout.FromPath(filepath.Join(job2, key('a')))
	if err != nil {
		t.Fatal(err)
	}
	ii, _ := lp.ImageIndex()
	im, _ := ii.IndexManifest()
	got, err := lp.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("populated entry: %v", err)
	}
	if wd, _ := good.Digest(); im.Manifests[0].Digest != wd {
		t.Errorf("populated entry holds %s, want %s", im.Manifests[0].Digest, wd)
	}
	// A tampered shared entry is not handed out.
	sharedEntry := filepath.Join(shared, key('a'))
	os.Chmod(layerOf(sharedEntry, good), 0o644)
	os.WriteFile(layerOf(sharedEntry, good), []byte("tampered"), 0o644)
	job3 := t.TempDir()
	if n, err := lc.populate(t.Context(), shared, job3, true); err != nil || n != 1 {
		t.Errorf("populate(copy) of a tampered entry = %d, %v; want it left out", n, err)
	}

	// A stale entry is not handed out (kaniko would ignore it past its
	// TTL); the build's fresh one replaces it, while no other build of the
	// tenant runs.
	old := time.Now().Add(-staleAfter - time.Hour)
	os.Chtimes(existing, old, old)
	job4 := t.TempDir()
	if n, err := lc.populate(t.Context(), shared, job4, false); err != nil || n != 1 {
		t.Errorf("populate with a stale entry = %d, %v; want 1 (the stale one left out)", n, err)
	}
	_, fresh := write(job4, key('1'), 2048)
	lc.enter(shared)
	lc.enter(shared)
	if n, _, err := lc.importNew(t.Context(), shared, job4); err != nil || n != 0 {
		t.Errorf("importNew over a stale entry with another build running = %d, %v; want 0", n, err)
	}
	lc.active[shared]--
	if n, _, err := lc.importNew(t.Context(), shared, job4); err != nil || n != 1 {
		t.Errorf("importNew over a stale entry = %d, %v; want 1", n, err)
	}
	ib, _ := os.ReadFile(filepath.Join(existing, "index.json"))
	if fd, _ := fresh.Digest(); !strings.Contains(string(ib), fd.String()) {
		t.Errorf("stale entry not replaced by the fresh one: index %s", ib)
	}
}

// BenchmarkLayerCachePopulate measures handing a build a tenant's cache of
// 200 entries of 1 MiB: links into the read-only bind (a root gateway), or
// checked copies (a gateway that is not root).
func BenchmarkLayerCachePopulate(b *testing.B) {
	shared := b.TempDir()
	lc := &layerCaches{dir: filepath.Dir(shared), maxBytes: 1 << 30}
	for i := range 200 {
		img, err := random.Image(1<<20, 1)
		if err != nil {
			b.Fatal(err)
		}
		p, err := layout.Write(filepath.Join(shared, fmt.Sprintf("layers:%064x", i)), empty.Index)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.AppendImage(img); err != nil {
			b.Fatal(err)
		}
	}
	for _, copy := range []bool{false, true} {
		b.Run(fmt.Sprintf("copy=%v", copy), func(b *testing.B) {
			for range b.N {
				job := b.TempDir()
				if n, err := lc.populate(b.Context(), shared, job, copy); err != nil || n != 200 {
					b.Fatalf("populate = %d, %v", n, err)
				}
			}
		})
	}
}

// A new executor never reads layers an older one cached.
func TestTenantDirPerExecutor(t *testing.T) {
	dir := t.TempDir()
	dirOf := func(exe, tenant string) string {
		lc := &layerCaches{dir: dir, maxBytes: 1 << 20, exe: exe}
		d, err := lc.tenantDir(tenant)
		if err != nil {
			t.Fatalf("tenantDir(%q) = %v", tenant, err)
		}
		return d
	}
	if a, b := dirOf("old", "team-a"), dirOf("new", "team-a"); a == b {
		t.Errorf("tenantDir(team-a) = %s for two executors, want one directory each", a)
	}
	if a, b := dirOf("new", "team-a"), dirOf("new", "team-a"); a != b {
		t.Errorf("tenantDir(team-a) = %s, then %s with the same executor, want the same", a, b)
	}
	if a, b := dirOf("new", "team-a"), dirOf("new", "team-b"); a == b {
		t.Errorf("tenantDir = %s for two tenants, want one directory each", a)
	}
}

// writeCacheEntry writes the cache entry name under dir as kaniko lays
// one out (index.json, manifest, config, one layer), with the layer file
// made by layer at the path given, and returns the bytes of its blobs.
func writeCacheEntry(t *testing.T, dir, name string, layer func(t *testing.T, path string)) int64 {
	t.Helper()
	entry := filepath.Join(dir, name)
	blobs := filepath.Join(entry, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	blob := func(b []byte) v1.Descriptor {
		h, n, err := v1.SHA256(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(blobs, h.Hex), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return v1.Descriptor{Digest: h, Size: n}
	}
	lp := filepath.Join(entry, "layer")
	layer(t, lp)
	f, err := os.Open(lp)
	if err != nil {
		t.Fatal(err)
	}
	lh, ln, err := v1.SHA256(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lp, filepath.Join(blobs, lh.Hex)); err != nil {
		t.Fatal(err)
	}
	cfg := blob([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"comment":"` + name + `"}`))
	cfg.MediaType = types.OCIConfigJSON
	mb, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        cfg,
		Layers:        []v1.Descriptor{{MediaType: types.OCILayer, Digest: lh, Size: ln}},
	})
	if err != nil {
		t.Fatal(err)
	}
	md := blob(mb)
	md.MediaType = types.OCIManifestSchema1
	ib, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{md}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(entry, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
	return md.Size + cfg.Size + ln
}

// blobBytes sums the sizes of the blobs of the entries in dir.
func blobBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	names, err := entries(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		n += treeSize(filepath.Join(dir, name, "blobs"))
	}
	return n
}

// TestLayerCacheImportBudget imports many entries at once: all of them
// together stay within the import's budget (the smaller of the caches'
// bound and the workspace's), the rest refused and said so; blob files
// that cost the build less than their size (sparse, or one file
// hard-linked into every entry) are refused; small files are not checked
// for holes.
func TestLayerCacheImportBudget(t *testing.T) {
	const layerSize = 300 << 10
	filled := func(t *testing.T, p string) {
		b := make([]byte, layerSize)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sparse := func(size int64) func(t *testing.T, p string) {
		return func(t *testing.T, p string) {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, size); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name         string
		maxBytes     int64 // the caches' bound
		workspaceMax int64
		layer        func(t *testing.T, p string)
		linked       bool // every entry's layer is one file
		wantN        int
		wantRefused  string // in every refusal
	}{
		{"within the caches' bound", 1 << 20, 0, filled, false, 3, "over the bound"},
		{"within the workspace's bound", 1 << 30, 1 << 20, filled, false, 3, "over the bound"},
		{"hard-linked", 1 << 20, 0, filled, true, 0, "hard links"},
		{"sparse", 1 << 20, 0, sparse(layerSize), false, 0, "sparse"},
		{"small sparse", 1 << 20, 0, sparse(sparseFloor), false, 6, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared, job := t.TempDir(), t.TempDir()
			lc := &layerCaches{dir: filepath.Dir(shared), maxBytes: tc.maxBytes, workspaceMax: tc.workspaceMax}
			first := filepath.Join(t.TempDir(), "layer")
			tc.layer(t, first)
			for i := range 6 {
				layer := tc.layer
				if tc.linked {
					layer = func(t *testing.T, p string) {
						if err := os.Link(first, p); err != nil {
							t.Fatal(err)
						}
					}
				}
				writeCacheEntry(t, job, fmt.Sprintf("layers:%064x", i), layer)
			}
			n, refused, err := lc.importNew(t.Context(), shared, job)
			if err != nil || n != tc.wantN || len(refused) != 6-tc.wantN {
				t.Fatalf("importNew = %d, %v, %v; want %d imported, %d refused", n, refused, err, tc.wantN, 6-tc.wantN)
			}
			for _, r := range refused {
				if !strings.Contains(r.Error(), tc.wantRefused) {
					t.Errorf("importNew refused %v, want %q", r, tc.wantRefused)
				}
			}
			if got, budget := blobBytes(t, shared), lc.importBudget(); got > budget {
				t.Errorf("importNew copied %d bytes, want at most %d", got, budget)
			}
			if names, _ := entries(shared); len(names) != n {
				t.Errorf("shared cache holds %v after importing %d", names, n)
			}
		})
	}
}

// TestLayerCacheImportCancelled imports with the build's context done:
// nothing is copied, the entries are refused, and no part of an entry is
// left; a blob copy stops at its first read once the context is done.
func TestLayerCacheImportCancelled(t *testing.T) {
	shared, job := t.TempDir(), t.TempDir()
	lc := &layerCaches{dir: filepath.Dir(shared), maxBytes: 1 << 30}
	layer := func(t *testing.T, p string) {
		b := make([]byte, 1<<20)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		writeCacheEntry(t, job, fmt.Sprintf("layers:%064x", i), layer)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n, refused, err := lc.importNew(ctx, shared, job)
	if err != nil || n != 0 || len(refused) != 3 {
		t.Fatalf("importNew(cancelled) = %d, %v, %v; want 0 imported, 3 refused", n, refused, err)
	}
	for _, r := range refused {
		if !errors.Is(r, context.Canceled) {
			t.Errorf("importNew(cancelled) refused %v, want %v", r, context.Canceled)
		}
	}
	if des, _ := os.ReadDir(shared); len(des) != 0 {
		t.Errorf("importNew(cancelled) left %d files in the shared cache, want none", len(des))
	}

	// Stopped within a blob: copyEntry reads index.json and copies the
	// manifest, then copyCacheBlob stops at the layer's first read.
	src, err := openDir(job)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	name := fmt.Sprintf("layers:%064x", 0)
	ib, _ := os.ReadFile(filepath.Join(job, name, "index.json"))
	var idx v1.IndexManifest
	json.Unmarshal(ib, &idx)
	mb, _ := os.ReadFile(filepath.Join(job, name, "blobs", "sha256", idx.Manifests[0].Digest.Hex))
	var m v1.Manifest
	json.Unmarshal(mb, &m)
	if _, err := copyCacheBlob(ctx, src, name, m.Layers[0], t.TempDir(), false); !errors.Is(err, context.Canceled) {
		t.Errorf("copyCacheBlob(cancelled) = %v, want %v", err, context.Canceled)
	}
	if _, err := copyEntry(ctx, src, name, shared, 1<<30, true); !errors.Is(err, context.Canceled) {
		t.Errorf("copyEntry(cancelled) = %v, want %v", err, context.Canceled)
	}
	if des, _ := os.ReadDir(shared); len(des) != 0 {
		t.Errorf("copyEntry(cancelled) left %d files in the shared cache, want none", len(des))
	}
}

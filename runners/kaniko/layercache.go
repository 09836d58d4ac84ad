package kaniko

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/ctxio"
	"github.com/buildgw/buildgw/ocilayout"
	"github.com/buildgw/buildgw/sandbox"
)

// layerCaches keeps the tenants' (cache scopes') shared layer caches, and
// all of them together within a bound.
//
// A sandbox never gets a writable handle on a shared cache. Its kaniko
// gets --cache-repo in a fresh directory of the job's workspace, so that
// what a build writes there counts against the workspace's limits and
// goes with it. That directory starts with one symlink per entry of the
// tenant's shared cache, into a read-only bind of it (SharedLayerCache);
// the shared entries are owned by the gateway's user, which does not
// exist inside the sandbox, and are read-only (0444 files, 0755
// directories), so no build step can alter them even by remounting. After
// a successful build the gateway imports the entries kaniko added (one OCI
// layout per cache key) itself: each blob read without following links,
// checked against its digest and copied into a new gateway-owned entry,
// all of the build's entries within one budget and the job's deadline.
// An entry, once in a shared cache, is never replaced.
//
// A gateway that is not root runs the sandbox as its own user, which
// would own the shared entries too; it copies (and checks) a tenant's
// entries into the job's directory instead of binding them.
type layerCaches struct {
	dir      string
	maxBytes int64
	// workspaceMax bounds a build's workspace, which holds all it can
	// hand an import; 0: unknown.
	workspaceMax int64
	// exe is the executor's digest. kaniko's own keys leave the executor
	// out, so a patched executor would reuse layers an older one built
	// (a RUN cached under the wrong group, say): each executor gets its
	// own directories, and the old ones age out.
	exe    string
	mu     sync.Mutex
	active map[string]int // tenant cache directory → running builds
}

// Names in a tenant's cache: kaniko's --cache-repo=oci:/kaniko/cache/layers
// makes one layout per cache key (a sha256) named layers:KEY.
var entryName = regexp.MustCompile(`^layers:[0-9a-f]{64}$`)

// cacheRepo is what kaniko gets as --cache-repo.
var cacheRepo = "oci:" + path.Join(sandbox.LayerCache, "layers")

// Bounds on what an import reads from a job's cache directory.
const (
	maxImportEntries = 1024
	maxIndexBytes    = 64 << 10
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 8 << 20
)

// scopePrefix starts every tenant directory's name. Directories without
// it were made by an older gateway, writable by sandboxes, and are never
// used (eviction empties them).
const scopePrefix = "s-"

// tenantDir returns the directory of tenant's shared cache, creating it
// owned by the gateway, traversable but not listable by others (the
// sandbox user binds it read-only).
func (lc *layerCaches) tenantDir(tenant string) (string, error) {
	if err := os.MkdirAll(lc.dir, 0o711); err != nil {
		return "", fmt.Errorf("creating layer cache: %w", err)
	}
	sum := sha256.Sum256([]byte(tenant + "\x00" + lc.exe))
	dir := filepath.Join(lc.dir, scopePrefix+hex.EncodeToString(sum[:16]))
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("creating layer cache: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return "", fmt.Errorf("creating layer cache: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return "", fmt.Errorf("layer cache %s is not a directory of the gateway's user, writable only by it", dir)
	}
	return dir, nil
}

// populate fills the job's empty cache directory jobDir with the entries
// of the shared cache tdir: symlinks into the read-only bind at
// sandbox.SharedLayerCache, or with copy, checked copies.
func (lc *layerCaches) populate(ctx context.Context, tdir, jobDir string, copy bool) (int, error) {
	all, err := entries(tdir)
	if err != nil {
		return 0, err
	}
	// kaniko ignores an entry past its TTL and writes a new one, which
	// importNew then takes in place of the old.
	var names []string
	for _, n := range all {
		if info, err := os.Lstat(filepath.Join(tdir, n)); err == nil && time.Since(info.ModTime()) < staleAfter {
			names = append(names, n)
		}
	}
	if !copy {
		for _, n := range names {
			if err := os.Symlink(path.Join(sandbox.SharedLayerCache, n), filepath.Join(jobDir, n)); err != nil {
				return 0, fmt.Errorf("preparing the layer cache: %w", err)
			}
		}
		return len(names), nil
	}
	src, err := openDir(tdir)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	// The newest first, within a budget: each build pays for its copy in
	// time and workspace.
	mod := map[string]time.Time{}
	for _, n := range names {
		if info, err := os.Lstat(filepath.Join(tdir, n)); err == nil {
			mod[n] = info.ModTime()
		}
	}
	sort.SliceStable(names, func(i, j int) bool { return mod[names[i]].After(mod[names[j]]) })
	n, budget := 0, min(lc.maxBytes, maxCopyBytes)
	for _, name := range names {
		// A damaged entry costs a cache miss, never the build.
		size, err := copyEntry(ctx, src, name, jobDir, budget, false)
		if errors.Is(err, errOverBound) || ctx.Err() != nil {
			break
		}
		if err == nil {
			n++
			budget -= size
		}
	}
	return n, nil
}

// errOverBound is an entry larger than what may still be copied.
var errOverBound = errors.New("entry over the bound")

// maxCopyBytes bounds what a copying populate hands one build.
const maxCopyBytes = 2 << 30

// entries lists the cache entries in dir.
func entries(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading layer cache: %w", err)
	}
	var names []string
	for _, d := range des {
		if d.IsDir() && entryName.MatchString(d.Name()) {
			names = append(names, d.Name())
		}
	}
	return names, nil
}

// importNew copies into the shared cache tdir the entries that the build
// left in its cache directory jobDir and tdir lacks, each checked (see
// copyEntry), all of them together within importBudget. It reports how
// many it imported and why it refused others; a refused entry is left
// out, never a reason to fail the build. It stops when ctx is done,
// leaving no part of an entry.
func (lc *layerCaches) importNew(ctx context.Context, tdir, jobDir string) (int, []error, error) {
	src, err := openDir(jobDir)
	if err != nil {
		return 0, nil, err
	}
	defer src.Close()
	des, err := src.ReadDir(-1)
	if err != nil {
		return 0, nil, fmt.Errorf("reading the build's layer cache: %w", err)
	}
	// In name order, so that which entries fit in the budget does not
	// depend on the directory's.
	sort.Slice(des, func(i, j int) bool { return des[i].Name() < des[j].Name() })
	n, budget := 0, lc.importBudget()
	var refused []error
	var stopped error
	for _, d := range des {
		name := d.Name()
		if d.Type() == fs.ModeSymlink {
			continue // an entry the build was handed
		}
		if !entryName.MatchString(name) || !d.IsDir() {
			refused = append(refused, fmt.Errorf("%q: not a cache entry", name))
			continue
		}
		if info, err := os.Lstat(filepath.Join(tdir, name)); err == nil {
			// An entry is replaced only once stale, and only while no
			// other build can be reading it.
			if stopped != nil || time.Since(info.ModTime()) < staleAfter || !lc.removeIfAlone(tdir, name) {
				continue
			}
		}
		if n == maxImportEntries {
			refused = append(refused, fmt.Errorf("more than %d new entries", maxImportEntries))
			break
		}
		if stopped == nil && ctx.Err() != nil {
			stopped = fmt.Errorf("import stopped: %w", context.Cause(ctx))
		}
		if stopped != nil {
			// Refused unread.
			refused = append(refused, fmt.Errorf("%q: %w", name, stopped))
			continue
		}
		size, err := copyEntry(ctx, src, name, tdir, budget, true)
		if err != nil {
			refused = append(refused, fmt.Errorf("%q: %w", name, err))
			switch {
			case ctx.Err() != nil:
				stopped = fmt.Errorf("import stopped: %w", context.Cause(ctx))
			case errors.Is(err, errOverBound):
				stopped = fmt.Errorf("%w: the build's import budget of %d bytes is spent", errOverBound, lc.importBudget())
			}
			continue
		}
		budget -= size
		n++
	}
	if len(refused) > maxRefusals {
		refused = append(refused[:maxRefusals], fmt.Errorf("and %d more", len(refused)-maxRefusals))
	}
	return n, refused, nil
}

// importBudget bounds the bytes one build's import copies, all entries
// together: at most what the build could have written, its workspace's
// bound (each blob copied is a file of real blocks there, see
// copyCacheBlob), and at most the caches' bound, which eviction restores
// only after the import.
func (lc *layerCaches) importBudget() int64 {
	if lc.workspaceMax > 0 {
		return min(lc.maxBytes, lc.workspaceMax)
	}
	return lc.maxBytes
}

// maxRefusals bounds the refusals an import reports: a build may leave
// any number of files.
const maxRefusals = 10

// copyEntry copies the cache entry name, an OCI layout with one image,
// from under src into dstDir: every blob the image names, opened beneath
// src without following links, a regular file of the size its descriptor
// gives, checked against its digest. Nothing else of the entry is copied:
// index.json and oci-layout are written anew. With shared the copy is the
// gateway's read-only entry. It returns the bytes copied, at most
// maxBytes; a copy that ctx stops leaves nothing in dstDir.
func copyEntry(ctx context.Context, src *os.File, name, dstDir string, maxBytes int64, shared bool) (int64, error) {
	ib, err := readFileBeneath(src, name+"/index.json", maxIndexBytes)
	if err != nil {
		return 0, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(ib, &idx); err != nil {
		return 0, fmt.Errorf("index.json: %w", err)
	}
	if len(idx.Manifests) != 1 {
		return 0, fmt.Errorf("index.json names %d manifests, want 1", len(idx.Manifests))
	}
	md := idx.Manifests[0]
	if md.Size > maxManifestBytes {
		return 0, fmt.Errorf("manifest of %d bytes: %w", md.Size, ocilayout.ErrTooLarge)
	}
	if md.Size > maxBytes {
		return 0, fmt.Errorf("%w of %d bytes", errOverBound, maxBytes)
	}
	tmp, err := os.MkdirTemp(dstDir, ".tmp-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	blobs := filepath.Join(tmp, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return 0, err
	}
	mb, err := copyCacheBlob(ctx, src, name, md, blobs, true)
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	if m.Config.Size > maxConfigBytes {
		return 0, fmt.Errorf("config of %d bytes: %w", m.Config.Size, ocilayout.ErrTooLarge)
	}
	total := md.Size
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if total += d.Size; d.Size < 0 || total > maxBytes {
			return 0, fmt.Errorf("%w of %d bytes", errOverBound, maxBytes)
		}
		if _, err := os.Lstat(filepath.Join(blobs, d.Digest.Hex)); err == nil && d.Digest.Algorithm == "sha256" {
			total -= d.Size // named twice
			continue
		}
		if err := ctx.Err(); err != nil {
			return 0, context.Cause(ctx)
		}
		if _, err := copyCacheBlob(ctx, src, name, d, blobs, false); err != nil {
			return 0, fmt.Errorf("blob %s: %w", d.Digest, err)
		}
	}
	nb, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.index.v1+json",
		Manifests:     []v1.Descriptor{{MediaType: md.MediaType, Size: md.Size, Digest: md.Digest}},
	})
	if err != nil {
		return 0, err
	}
	mode := os.FileMode(0o644)
	if shared {
		mode = 0o444
	}
	if err := os.WriteFile(filepath.Join(tmp, "index.json"), nb, mode); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), mode); err != nil {
		return 0, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, filepath.Join(dstDir, name)); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return 0, nil // a concurrent build imported it first
		}
		return 0, err
	}
	return total, nil
}

// copyCacheBlob copies the blob of d from entry name under src into the
// directory blobs, checking its size and digest; with keep it also
// returns the content. It stops when ctx is done.
func copyCacheBlob(ctx context.Context, src *os.File, name string, d v1.Descriptor, blobs string, keep bool) ([]byte, error) {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 || strings.Trim(d.Digest.Hex, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("unsupported digest %q", d.Digest)
	}
	in, size, err := ocilayout.OpenBeneath(src, name+"/blobs/sha256/"+d.Digest.Hex, d.Size)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	if size != d.Size {
		return nil, fmt.Errorf("holds %d bytes, its descriptor says %d", size, d.Size)
	}
	if err := checkBlobFile(in); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(blobs, d.Digest.Hex), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	w := io.MultiWriter(out, h)
	var kept strings.Builder
	if keep {
		w = io.MultiWriter(w, &kept)
	}
	n, err := io.Copy(w, io.LimitReader(ctxio.Reader(ctx, in), d.Size+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if n != d.Size {
		return nil, fmt.Errorf("holds %d bytes, its descriptor says %d", n, d.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Digest.Hex {
		return nil, fmt.Errorf("content has digest sha256:%s", got)
	}
	return []byte(kept.String()), nil
}

// checkBlobFile refuses a blob file that costs its writer less than its
// size: sparse (holes read as zeros the copy would write out for real)
// or hard-linked (one file named by many entries), so that an import's
// bytes are bytes the build's workspace held, counted against its limit.
// kaniko writes each blob of its cache layouts once, to a file of its own
// (go-containerregistry's layout.WriteBlob: a new file, then a rename),
// never a link or a hole. Files of up to sparseFloor bytes may have no
// blocks of their own (inline data) and are let through.
func checkBlobFile(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	if st.Nlink > 1 {
		return fmt.Errorf("%s has %d hard links, want 1", f.Name(), st.Nlink)
	}
	if st.Size > sparseFloor && st.Blocks*512 < st.Size {
		return fmt.Errorf("%s is sparse: %d bytes, %d allocated", f.Name(), st.Size, st.Blocks*512)
	}
	return nil
}

// sparseFloor is the size up to which a blob file is not checked for
// holes.
const sparseFloor = 64 << 10

// staleAfter is when a build stops getting an entry: a day before
// kaniko's default --cache-ttl (two weeks) would make it ignore it.
const staleAfter = 13 * 24 * time.Hour

// removeIfAlone removes entry name of the tenant cache tdir if the caller's
// build is the only one using tdir, and reports whether it did.
func (lc *layerCaches) removeIfAlone(tdir, name string) bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.active[tdir] == 1 && os.RemoveAll(filepath.Join(tdir, name)) == nil
}

// enter marks dir in use by one more build.
func (lc *layerCaches) enter(dir string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.active == nil {
		lc.active = map[string]int{}
	}
	lc.active[dir]++
}

// leave marks dir used by one build less, then evicts. Eviction never
// touches a tenant with a build running: kaniko may be reading any of its
// entries.
func (lc *layerCaches) leave(dir string) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.active[dir]--; lc.active[dir] <= 0 {
		delete(lc.active, dir)
	}
	return lc.evictLocked()
}

// evictLocked removes the oldest entries (one OCI layout per cached layer
// in a tenant's directory) of idle tenants until all tenants' entries fit
// in maxBytes.
func (lc *layerCaches) evictLocked() error {
	type entry struct {
		path string
		mod  time.Time
		size int64
	}
	var idle []entry
	var total int64
	tenants, err := os.ReadDir(lc.dir)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		td := filepath.Join(lc.dir, t.Name())
		es, err := os.ReadDir(td)
		if err != nil {
			continue
		}
		for _, e := range es {
			p := filepath.Join(td, e.Name())
			info, err := e.Info()
			if err != nil {
				continue
			}
			s := treeSize(p)
			total += s
			// An import in progress (.tmp-) belongs to a running build.
			if lc.active[td] == 0 && !strings.HasPrefix(e.Name(), ".") {
				idle = append(idle, entry{p, info.ModTime(), s})
			}
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].mod.Before(idle[j].mod) })
	for _, e := range idle {
		if total <= lc.maxBytes {
			break
		}
		if err := os.RemoveAll(e.path); err != nil {
			return fmt.Errorf("evicting cached layer %s: %w", e.path, err)
		}
		total -= e.size
	}
	return nil
}

// sweep removes what an earlier gateway left: imports it did not finish,
// and tenant directories of the older layout, which sandboxes could write.
func (lc *layerCaches) sweep() {
	tenants, err := os.ReadDir(lc.dir)
	if err != nil {
		return
	}
	for _, t := range tenants {
		td := filepath.Join(lc.dir, t.Name())
		if !strings.HasPrefix(t.Name(), scopePrefix) {
			os.RemoveAll(td)
			continue
		}
		tmps, _ := filepath.Glob(filepath.Join(td, ".tmp-*"))
		for _, p := range tmps {
			os.RemoveAll(p)
		}
	}
}

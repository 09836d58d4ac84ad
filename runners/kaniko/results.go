package kaniko

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/sandbox"
)

// resultKeyVersion changes whenever what goes into a key changes, so that
// entries of an older gateway are never taken for new ones.
const resultKeyVersion = "buildgw-kaniko-result-v1"

// results keeps the images of earlier builds, per tenant, under a key over
// everything that determines the image (resultKey). When every step of a
// build would be a layer cache hit, kaniko still unpacks the base, looks
// up and extracts every cached layer and snapshots the filesystem, which
// costs about as much as running the steps; an identical earlier result
// costs nothing. Entries are OCI layouts owned by the gateway (0700),
// never reachable from a sandbox, evicted least recently used first when
// all entries together exceed maxBytes.
type results struct {
	dir      string
	maxBytes int64
	// exe identifies the executor binary: a new executor makes new keys.
	exe string
	// mu serialises linking an entry out, publishing one and evicting, so
	// that an entry is never removed while it is being linked.
	mu sync.Mutex
}

func newResults(dir string, maxBytes int64, executorDigest string) (*results, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating result cache: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating result cache: %w", err)
	}
	rc := &results{dir: dir, maxBytes: maxBytes, exe: executorDigest}
	// Left by a gateway that stopped while storing an entry.
	tmps, _ := filepath.Glob(filepath.Join(dir, "*", ".tmp-*"))
	for _, t := range tmps {
		os.RemoveAll(t)
	}
	return rc, nil
}

// tenantDir names a tenant by a hash, so no tenant name becomes a path.
func (rc *results) tenantDir(tenant string) string {
	sum := sha256.Sum256([]byte(tenant))
	return filepath.Join(rc.dir, hex.EncodeToString(sum[:16]))
}

// key returns the result key of req run with args, or "" if its result
// cannot be known in advance: no analysis of the Dockerfile, base images
// not resolved by the gateway, or an ADD (of the Dockerfile or of a base
// image's ONBUILD triggers) that fetches from the network what the
// context cannot tell has changed.
func (rc *results) key(req *builder.Request, args []string, network netmode.Mode) (string, error) {
	if req.BaseImages == nil || req.Analysis == nil {
		return "", nil
	}
	if network != netmode.None {
		if len(req.Analysis.Remote) > 0 {
			return "", nil
		}
		ob, err := baseTriggers(req)
		if err != nil {
			return "", err
		}
		if len(ob.Remote) > 0 {
			return "", nil
		}
	}
	h := sha256.New()
	field := func(k string, vs ...string) {
		fmt.Fprintf(h, "%s %d\n", k, len(vs))
		for _, v := range vs {
			fmt.Fprintf(h, "%d:%s\n", len(v), v)
		}
	}
	field("version", resultKeyVersion)
	field("executor", rc.exe)
	// The full command line: Dockerfile path, build args, labels,
	// target, insecure registries and the runner's kaniko flags, in a
	// fixed order (kanikoArgs sorts).
	field("args", args...)
	field("network", string(network))
	for _, b := range req.BaseImages.Images {
		field("base", b.Name, b.Digest)
	}
	if err := hashTree(h, req.ContextDir); err != nil {
		return "", fmt.Errorf("hashing the context: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashTree writes into h every entry of dir: path, type, permission bits,
// owner, and a regular file's content or a symlink's target. Modification times
// are left out, as docker's cache does: a fresh checkout of the same
// commit is the same build. Nothing is followed: dir is the sandbox's.
func hashTree(h hash.Hash, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		fmt.Fprintf(h, "%d:%s %o %o ", len(rel), rel, mode.Type(), mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		// COPY without --chown keeps the owner.
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			fmt.Fprintf(h, "%d:%d ", st.Uid, st.Gid)
		}
		switch {
		case mode.IsRegular():
			f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, " %d\n", n)
		case mode&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%d:%s\n", len(t), t)
		default:
			fmt.Fprintln(h)
		}
		return nil
	})
}

// load links the entry of key into dst (a directory under the job's
// workspace that must not exist), so that eviction cannot take it away
// while the job pushes it, and marks the entry used. It reports false if
// there is none.
func (rc *results) load(tenant, key, dst string) (bool, error) {
	entry := filepath.Join(rc.tenantDir(tenant), key)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, err := os.Stat(entry); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err := linkTree(entry, dst); err != nil {
		os.RemoveAll(dst)
		return false, fmt.Errorf("reading cached result: %w", err)
	}
	now := time.Now()
	os.Chtimes(entry, now, now)
	return true, nil
}

// drop removes the entry of key, found unreadable, so that the next
// build stores a good one.
func (rc *results) drop(tenant, key string) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return os.RemoveAll(filepath.Join(rc.tenantDir(tenant), key))
}

// store copies img, read from the layout kaniko wrote (owned by the
// sandbox) through ocilayout, into the entry of key, checking every blob
// against its digest on the way, then evicts. An entry that a concurrent
// identical build stored first is kept.
func (rc *results) store(ctx context.Context, tenant, key string, img v1.Image) error {
	td := rc.tenantDir(tenant)
	if err := os.MkdirAll(td, 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(td, ".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	size, err := copyImage(ctx, tmp, img)
	if err != nil {
		return err
	}
	if size > rc.maxBytes {
		return nil
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := os.Rename(tmp, filepath.Join(td, key)); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	return rc.evictLocked()
}

type resultEntry struct {
	path string
	used time.Time
	size int64
}

// evictLocked removes the least recently used entries until all of them
// fit in maxBytes.
func (rc *results) evictLocked() error {
	var entries []resultEntry
	var total int64
	tenants, err := os.ReadDir(rc.dir)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		es, err := os.ReadDir(filepath.Join(rc.dir, t.Name()))
		if err != nil {
			continue
		}
		for _, e := range es {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			p := filepath.Join(rc.dir, t.Name(), e.Name())
			info, err := e.Info()
			if err != nil {
				continue
			}
			s := treeSize(p)
			entries = append(entries, resultEntry{p, info.ModTime(), s})
			total += s
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].used.Before(entries[j].used) })
	for _, e := range entries {
		if total <= rc.maxBytes {
			break
		}
		if err := os.RemoveAll(e.path); err != nil {
			return fmt.Errorf("evicting %s: %w", e.path, err)
		}
		total -= e.size
	}
	return nil
}

func treeSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// copyImage writes an OCI layout holding only img into dst: new files of
// the gateway's, never links to the sandbox's, each blob read from img
// (which opens nothing by a path and checks what it reads) and checked
// against its digest again here, so that nothing but the image's own
// bytes can enter the cache. It returns the bytes written.
func copyImage(ctx context.Context, dst string, img v1.Image) (int64, error) {
	digest, err := img.Digest()
	if err != nil {
		return 0, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return 0, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return 0, err
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(dst, "blobs", "sha256"), 0o700); err != nil {
		return 0, err
	}
	type blob struct {
		h    v1.Hash
		open func() (io.ReadCloser, error)
	}
	blobs := []blob{
		{digest, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }},
		{cfgName, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cfg)), nil }},
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return 0, err
		}
		blobs = append(blobs, blob{h, l.Compressed})
	}
	var total int64
	seen := map[v1.Hash]bool{}
	for _, b := range blobs {
		if seen[b.h] {
			continue
		}
		seen[b.h] = true
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if b.h.Algorithm != "sha256" {
			return 0, fmt.Errorf("blob %s: unsupported digest algorithm", b.h)
		}
		n, err := copyBlob(b.open, filepath.Join(dst, "blobs", "sha256", b.h.Hex), b.h.Hex)
		if err != nil {
			return 0, fmt.Errorf("copying blob %s: %w", b.h, err)
		}
		total += n
	}
	idx := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.index.v1+json",
		Manifests:     []v1.Descriptor{{MediaType: mt, Size: int64(len(raw)), Digest: digest}},
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dst, "index.json"), ib, 0o600); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dst, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
		return 0, err
	}
	return total + int64(len(ib)), nil
}

func copyBlob(open func() (io.ReadCloser, error), dst, wantHex string) (int64, error) {
	in, err := open()
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantHex {
		return 0, errors.New("content does not match its digest")
	}
	return n, nil
}

// linkTree hard-links every file of src into a new tree at dst (copying
// where links are not possible, e.g. across file systems).
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		t := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.Mkdir(t, 0o700)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		if os.Link(p, t) == nil {
			return nil
		}
		return sandbox.CopyFile(p, t, 0o600)
	})
}

// fileDigest returns the hex sha256 of the file at path: the executor's
// identity in cache keys, so that a new executor never reuses what an old
// one built.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hashing executor: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing executor %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Package basestore is the gateway's shared store of base images: the
// images builds pull (FROM, COPY --from), fetched once by the gateway with
// its own credentials, kept on disk by digest and bounded in size (least
// recently used blobs go first). Each build gets the images it needs as a
// read-only OCI layout in its workspace, so its sandbox needs neither
// network nor credentials to pull them.
//
// A stored blob is kept with the registries that served its bytes to the
// store, and serves a build only for one of those: a registry that claims
// a digest, or lists in a manifest blobs it never served, is asked for
// their bytes like any registry that has not served them yet.
//
// Each blob is read no further than the size its descriptor gives, and
// must have that size; a layer may have no more than WithMaxBlobBytes,
// a manifest or config no more than MaxMetadataBytes (nor is the answer
// to a manifest request read further, whatever size was said). The blobs of a
// build's images together must fit in the store's bound: they are counted
// from the manifests before any layer is fetched.
package basestore

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Store is the on-disk store. Its methods may be called concurrently; the
// same blob is downloaded once however many builds need it at a time.
type Store struct {
	dir string
	o   options

	mu       sync.Mutex
	blobs    map[v1.Hash]*list.Element // of *blob, most recently used first
	lru      *list.List
	size     int64
	inflight map[fetchKey]*call
	stats    Stats
}

type blob struct {
	digest v1.Hash
	size   int64
	leases int // builds between fetching and linking it
	// origins are the registries (name.Registry.RegistryStr) that served
	// the blob's bytes to the store, digest-checked.
	origins []string
}

// fetchKey is one download: the same blob from another registry is
// another download, since that registry must serve its bytes too.
type fetchKey struct {
	registry string
	digest   v1.Hash
}

type call struct {
	done chan struct{}
	err  error
}

// Stats counts what the store has done since it was opened.
type Stats struct {
	// Downloads is how many blobs (layers, configs and manifests) were
	// downloaded, and DownloadedBytes their size. A stored blob downloaded
	// again from a registry that had not served it counts too.
	Downloads       int
	DownloadedBytes int64
	// Hits is how many blobs a build needed that were already stored,
	// served by the registry the build named.
	Hits int
	// Evictions is how many blobs were removed to stay within the bound.
	Evictions int
}

// New opens the store in dir, creating it if needed. Blobs already there
// (from before a restart) are kept with their origins, oldest use first in
// line for eviction; a blob without a record of its origins counts as
// served by no registry.
func New(dir string, opts ...Option) (*Store, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, o: o, blobs: map[v1.Hash]*list.Element{}, lru: list.New(), inflight: map[fetchKey]*call{}}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("base image store: %w", err)
	}
	for _, d := range []string{s.blobDir(), s.originDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("base image store: %w", err)
		}
	}
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return nil, fmt.Errorf("base image store: %w", err)
	}
	type found struct {
		b     *blob
		mtime time.Time
	}
	var all []found
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		h, err := v1.NewHash("sha256:" + e.Name())
		if err != nil {
			continue
		}
		origins, err := s.readOrigins(h)
		if err != nil {
			return nil, fmt.Errorf("base image store: %w", err)
		}
		all = append(all, found{&blob{digest: h, size: fi.Size(), origins: origins}, fi.ModTime()})
	}
	// Most recently used first, as the list keeps them.
	slices.SortFunc(all, func(a, b found) int { return b.mtime.Compare(a.mtime) })
	for _, f := range all {
		s.blobs[f.b.digest] = s.lru.PushBack(f.b)
		s.size += f.b.size
	}
	// Records of blobs that are gone (an eviction cut short).
	if ents, err := os.ReadDir(s.originDir()); err == nil {
		for _, e := range ents {
			if h, err := v1.NewHash("sha256:" + e.Name()); err != nil || s.blobs[h] == nil {
				os.Remove(filepath.Join(s.originDir(), e.Name()))
			}
		}
	}
	s.mu.Lock()
	s.evict()
	s.mu.Unlock()
	return s, nil
}

func (s *Store) blobDir() string   { return filepath.Join(s.dir, "blobs", "sha256") }
func (s *Store) originDir() string { return filepath.Join(s.dir, "origins", "sha256") }
func (s *Store) tmpDir() string    { return filepath.Join(s.dir, "tmp") }

func (s *Store) path(h v1.Hash) string       { return filepath.Join(s.blobDir(), h.Hex) }
func (s *Store) originPath(h v1.Hash) string { return filepath.Join(s.originDir(), h.Hex) }

// readOrigins reads the registries recorded for blob h, one a line; none
// if there is no record.
func (s *Store) readOrigins(h v1.Hash) ([]string, error) {
	b, err := os.ReadFile(s.originPath(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var origins []string
	for _, r := range strings.Split(string(b), "\n") {
		if r != "" && !slices.Contains(origins, r) {
			origins = append(origins, r)
		}
	}
	return origins, nil
}

// writeOrigins records b's origins, replacing the record whole so that a
// crash never leaves a cut registry name (which could name another one).
// A record that is not written costs a download after a restart, never a
// blob served for a registry that did not serve it. Called with s.mu held.
func (s *Store) writeOrigins(b *blob) error {
	f, err := os.CreateTemp(s.tmpDir(), "origins-"+b.digest.Hex+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(strings.Join(b.origins, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), s.originPath(b.digest))
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Size returns the bytes the store holds.
func (s *Store) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Has reports whether the blob is stored, whichever registries served it.
func (s *Store) Has(h v1.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[h]
	return ok
}

// Image is a base image resolved and fetched into the store. Its blobs
// stay leased, safe from eviction, until Release.
type Image struct {
	// Ref is the reference as asked for.
	Ref name.Reference
	// Digest is what Ref resolved to at the registry: an image manifest,
	// or an index for several platforms.
	Digest v1.Hash
	// Manifest is the descriptor of the image manifest for the store's
	// platform (the same as Digest unless Ref names an index).
	Manifest v1.Descriptor
	// Blobs are the manifest, config and layers.
	Blobs []v1.Hash
}

// Fetch resolves ref at its registry and makes sure that every blob of the
// image for the store's platform is stored, served by that registry. Every
// reference, by tag or by digest, costs one HEAD in its own repository,
// even when all its blobs are stored: that the repository holds the image
// is what lets a build have it from a store shared by every tenant. A
// stored blob that ref's registry has not served is downloaded from it.
// Release the image's leases when it has been linked.
func (s *Store) Fetch(ctx context.Context, ref name.Reference) (*Image, error) {
	return s.FetchChecked(ctx, ref, nil)
}

// FetchChecked is Fetch with a check of the image's config, made once the
// manifest and config are stored and before any layer is fetched: an
// image that check refuses costs two small blobs, and none of its layers
// reaches the store. check may be nil.
func (s *Store) FetchChecked(ctx context.Context, ref name.Reference, check func(*v1.ConfigFile) error) (*Image, error) {
	img, layers, err := s.resolve(ctx, ref, check, newBudget(s.o.maxBytes))
	if err != nil {
		return nil, err
	}
	if err := s.fetchLayers(ctx, img, layers); err != nil {
		return nil, err
	}
	return img, nil
}

// Config resolves ref and returns its config, fetching its manifest and
// config into the store but none of its layers.
func (s *Store) Config(ctx context.Context, ref name.Reference) (*v1.ConfigFile, error) {
	var cfg *v1.ConfigFile
	img, _, err := s.resolve(ctx, ref, func(c *v1.ConfigFile) error { cfg = c; return nil }, newBudget(s.o.maxBytes))
	if err != nil {
		return nil, err
	}
	s.Release(img)
	return cfg, nil
}

// resolve resolves ref, stores its manifests and config (leased for the
// image it returns, with the layers still to fetch) and applies check to
// the config. Every blob of the image is counted in bud, by the size its
// manifest gives, before any of them is downloaded.
func (s *Store) resolve(ctx context.Context, ref name.Reference, check func(*v1.ConfigFile) error, bud *budget) (_ *Image, _ []v1.Descriptor, err error) {
	img := &Image{Ref: ref}
	defer func() {
		if err != nil {
			s.Release(img)
		}
	}()
	ropts := s.remoteOptions(ctx, ref.Context().Registry)
	repo := ref.Context()

	// Asked of the registry even for a stored digest: the store, shared by
	// every tenant, is keyed by digest and by the registries that served
	// each blob, and the policy allows repositories. Only the named
	// repository's answer that it holds the digest lets a build have the
	// stored image (an index's children and a manifest's blobs are then in
	// that repository too); else a digest of another tenant's private
	// image, named under any allowed repository of a registry that served
	// it, would be served. A registry that answers falsely gains nothing:
	// the stored blobs it never served are asked of it, and their digests
	// checked.
	top, err := remote.Head(ref, ropts...)
	if err != nil {
		return nil, nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	if d, ok := ref.(name.Digest); ok && top.Digest.String() != d.DigestStr() {
		return nil, nil, fmt.Errorf("resolving %s: the registry answered with %s", ref, top.Digest)
	}
	img.Digest = top.Digest
	raw, err := s.manifest(ctx, repo, img, *top, ropts, bud)
	if err != nil {
		return nil, nil, err
	}
	mt, err := mediaType(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifest of %s: %w", ref, err)
	}
	img.Manifest = v1.Descriptor{MediaType: mt, Digest: top.Digest, Size: int64(len(raw))}
	if mt.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("reading index of %s: %w", ref, err)
		}
		child, err := pick(idx, s.o.platform)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
		if raw, err = s.manifest(ctx, repo, img, child, ropts, bud); err != nil {
			return nil, nil, err
		}
		img.Manifest = v1.Descriptor{MediaType: child.MediaType, Digest: child.Digest, Size: int64(len(raw))}
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifest of %s: %w", ref, err)
	}
	// Sizes are checked, and counted, before the config is downloaded: a
	// manifest that is refused costs no blob.
	if err := checkSize(m.Config, MaxMetadataBytes, "config", repo); err != nil {
		return nil, nil, err
	}
	for _, l := range m.Layers {
		if err := checkSize(l, s.o.maxBlobBytes, "layer", repo); err != nil {
			return nil, nil, err
		}
	}
	if err := bud.add(ref, append([]v1.Descriptor{m.Config}, m.Layers...)...); err != nil {
		return nil, nil, err
	}
	if err := s.blob(ctx, repo, img, m.Config, ropts); err != nil {
		return nil, nil, fmt.Errorf("fetching %s of %s: %w", m.Config.Digest, ref, err)
	}
	if check != nil {
		if err := s.checkConfig(m.Config.Digest, check); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref, err)
		}
	}
	return img, m.Layers, nil
}

// fetchLayers stores the layers of img that resolve returned, leased for
// it. On an error img is released.
func (s *Store) fetchLayers(ctx context.Context, img *Image, layers []v1.Descriptor) error {
	ropts := s.remoteOptions(ctx, img.Ref.Context().Registry)
	for _, d := range layers {
		if err := s.blob(ctx, img.Ref.Context(), img, d, ropts); err != nil {
			s.Release(img)
			return fmt.Errorf("fetching %s of %s: %w", d.Digest, img.Ref, err)
		}
	}
	return nil
}

// remoteOptions are the options of the store's requests to reg, within
// ctx: the caller's, over the store's bounded transport.
func (s *Store) remoteOptions(ctx context.Context, reg name.Registry) []remote.Option {
	// A copy: the caller's slice may be shared by concurrent fetches.
	return append(slices.Clone(s.o.remote(reg)), remote.WithTransport(&boundedTransport{s.o.transport(reg)}), remote.WithContext(ctx))
}

// blob stores the blob d of repo if it is not stored yet from repo's
// registry, and leases it for img. The download is read no further than
// d's size (and one byte more, to know it is too long).
func (s *Store) blob(ctx context.Context, repo name.Repository, img *Image, d v1.Descriptor, ropts []remote.Option) error {
	err := s.ensure(ctx, repo.RegistryStr(), d, func(w io.Writer) error {
		l, err := remote.Layer(repo.Digest(d.Digest.String()), ropts...)
		if err != nil {
			return err
		}
		// ggcr reads a blob fetched alone without a bound, to its digest
		// check at the end, which an endless answer never reaches.
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(w, io.LimitReader(rc, d.Size+1))
		return err
	})
	if err != nil {
		return err
	}
	img.Blobs = append(img.Blobs, d.Digest)
	return nil
}

// checkSize refuses a blob of repo whose descriptor gives no size or one
// beyond max.
func checkSize(d v1.Descriptor, max int64, what string, repo name.Repository) error {
	if d.Size < 0 {
		return fmt.Errorf("%s %s of %s: no size given (%d)", what, d.Digest, repo, d.Size)
	}
	if d.Size > max {
		return fmt.Errorf("%s %s of %s has %d bytes, more than the %d a %s may have", what, d.Digest, repo, d.Size, max, what)
	}
	return nil
}

// budget counts the bytes of the blobs of one build's images, each blob
// once, against the store's bound.
type budget struct {
	max, used int64
	seen      map[v1.Hash]bool
}

func newBudget(max int64) *budget { return &budget{max: max, seen: map[v1.Hash]bool{}} }

// add counts blobs of ref and fails once the build's blobs together pass
// the bound.
func (b *budget) add(ref name.Reference, blobs ...v1.Descriptor) error {
	for _, d := range blobs {
		if !b.seen[d.Digest] {
			b.seen[d.Digest] = true
			b.used += d.Size
		}
	}
	if b.used > b.max {
		return fmt.Errorf("the base images need more than the base image store's bound of %d bytes (base_images.max_bytes): %d bytes with %s", b.max, b.used, ref)
	}
	return nil
}

// checkConfig reads the stored config h and applies check to it.
func (s *Store) checkConfig(h v1.Hash, check func(*v1.ConfigFile) error) error {
	f, err := os.Open(s.path(h))
	if err != nil {
		return fmt.Errorf("reading config %s: %w", h, err)
	}
	defer f.Close()
	cfg, err := v1.ParseConfigFile(f)
	if err != nil {
		return fmt.Errorf("reading config %s: %w", h, err)
	}
	return check(cfg)
}

// manifest stores the manifest d of repo if it is not stored yet from
// repo's registry, leases it for img and returns its bytes. d's size,
// counted in bud before the download, must be its length.
func (s *Store) manifest(ctx context.Context, repo name.Repository, img *Image, d v1.Descriptor, ropts []remote.Option, bud *budget) ([]byte, error) {
	// A manifest of no size is one whose size the registry did not say.
	if d.Size == 0 {
		d.Size = -1
	}
	if err := checkSize(d, MaxMetadataBytes, "manifest", repo); err != nil {
		return nil, err
	}
	ref := repo.Digest(d.Digest.String())
	if err := bud.add(ref, d); err != nil {
		return nil, err
	}
	err := s.ensure(ctx, repo.RegistryStr(), d, func(w io.Writer) error {
		// ggcr would read up to 100 MiB of a manifest: the store's
		// transport cuts the answer at MaxMetadataBytes.
		bounded := remote.WithContext(withManifestBound(ctx, repo.RegistryStr()))
		desc, err := remote.Get(ref, append(ropts, bounded)...)
		if err != nil {
			return err
		}
		_, err = w.Write(desc.Manifest)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s of %s: %w", d.Digest, repo, err)
	}
	img.Blobs = append(img.Blobs, d.Digest)
	b, err := os.ReadFile(s.path(d.Digest))
	if err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
	}
	return b, nil
}

// ensure makes sure blob d is stored, served by registry, downloading it
// with get if not, and leases it. Concurrent calls for the same blob from
// the same registry wait for one download.
func (s *Store) ensure(ctx context.Context, registry string, d v1.Descriptor, get func(io.Writer) error) error {
	h := d.Digest
	if h.Algorithm != "sha256" {
		return fmt.Errorf("unsupported digest %s", h)
	}
	key := fetchKey{registry, h}
	for {
		s.mu.Lock()
		if e, ok := s.blobs[h]; ok && slices.Contains(e.Value.(*blob).origins, registry) {
			b := e.Value.(*blob)
			// The size was counted against the bound as the descriptor
			// gives it: it must be the blob's.
			if b.size != d.Size {
				s.mu.Unlock()
				return fmt.Errorf("%s has %d bytes, not the %d its descriptor gives", h, b.size, d.Size)
			}
			b.leases++
			s.lru.MoveToFront(e)
			s.stats.Hits++
			s.mu.Unlock()
			// The file's time keeps the order across restarts.
			now := time.Now()
			os.Chtimes(s.path(h), now, now)
			return nil
		}
		if c, ok := s.inflight[key]; ok {
			s.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if c.err != nil && ctx.Err() == nil && !errors.Is(c.err, context.Canceled) {
				return c.err
			}
			// Stored now, or the download was given up by a build that was
			// cancelled: look again.
			continue
		}
		c := &call{done: make(chan struct{})}
		s.inflight[key] = c
		s.mu.Unlock()

		tmp, size, err := s.download(registry, d, get)
		s.mu.Lock()
		if err == nil {
			err = s.add(registry, h, tmp, size)
		}
		delete(s.inflight, key)
		c.err = err
		if err == nil {
			s.stats.Downloads++
			s.stats.DownloadedBytes += size
			s.evict()
		}
		s.mu.Unlock()
		close(c.done)
		return err
	}
}

// add puts the downloaded blob h (the file tmp, which add removes or
// moves) in the store, or, if it is stored already (from another
// registry), keeps the stored file; then it records registry among the
// blob's origins and leases it. Called with s.mu held.
func (s *Store) add(registry string, h v1.Hash, tmp string, size int64) error {
	e, ok := s.blobs[h]
	if ok {
		// The same bytes, by digest: counted once.
		os.Remove(tmp)
		s.lru.MoveToFront(e)
	} else {
		if err := os.Rename(tmp, s.path(h)); err != nil {
			os.Remove(tmp)
			return err
		}
		e = s.lru.PushFront(&blob{digest: h, size: size})
		s.blobs[h] = e
		s.size += size
	}
	b := e.Value.(*blob)
	b.leases++
	if !slices.Contains(b.origins, registry) {
		b.origins = append(b.origins, registry)
	}
	// A record not written costs a download after a restart, no more.
	_ = s.writeOrigins(b)
	return nil
}

// download writes the blob d, served by registry, to a temporary file,
// read-only, checks its size and digest and returns the file's path,
// which the caller removes or moves. The file never holds more than d's
// size.
func (s *Store) download(registry string, d v1.Descriptor, get func(io.Writer) error) (string, int64, error) {
	h := d.Digest
	f, err := os.CreateTemp(s.tmpDir(), h.Hex+"-")
	if err != nil {
		return "", 0, err
	}
	hw := sha256.New()
	lw := &limitWriter{w: io.MultiWriter(f, hw), left: d.Size}
	err = get(lw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var manifestTooLong *tooLongError
	switch {
	case errors.As(err, &manifestTooLong):
		err = manifestTooLong
	case errors.Is(err, errTooLong):
		err = fmt.Errorf("%s served more than the %d bytes of %s", registry, d.Size, h)
	case lw.n != d.Size && err != nil:
		err = fmt.Errorf("%s served %d of the %d bytes of %s: %w", registry, lw.n, d.Size, h, err)
	case lw.n != d.Size:
		err = fmt.Errorf("%s served %d of the %d bytes of %s", registry, lw.n, d.Size, h)
	case err == nil:
		if got := hex.EncodeToString(hw.Sum(nil)); got != h.Hex {
			err = fmt.Errorf("content has digest sha256:%s, want %s", got, h)
		}
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o444)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, err
	}
	return f.Name(), lw.n, nil
}

// evict removes least recently used blobs, but none that is leased, until
// the store is within its bound. Called with s.mu held.
func (s *Store) evict() {
	for e := s.lru.Back(); e != nil && s.size > s.o.maxBytes; {
		prev := e.Prev()
		b := e.Value.(*blob)
		// The record of origins goes first: a blob left without one counts
		// as served by no registry.
		if b.leases == 0 && removed(s.originPath(b.digest)) {
			if removed(s.path(b.digest)) {
				s.lru.Remove(e)
				delete(s.blobs, b.digest)
				s.size -= b.size
				s.stats.Evictions++
			}
		}
		e = prev
	}
}

// Release returns img's leases: its blobs may be evicted again.
func (s *Store) Release(img *Image) {
	if img == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range img.Blobs {
		if e, ok := s.blobs[h]; ok {
			if b := e.Value.(*blob); b.leases > 0 {
				b.leases--
			}
		}
	}
	img.Blobs = nil
	s.evict()
}

// Link writes an OCI image layout at dir holding imgs, each named in
// index.json by its reference (org.opencontainers.image.ref.name). Blobs
// are hard links into the store when the store's option allows, else
// copies.
func (s *Store) Link(dir string, imgs []*Image) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	type desc struct {
		MediaType   types.MediaType   `json:"mediaType"`
		Digest      v1.Hash           `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations"`
	}
	var manifests []desc
	for _, img := range imgs {
		for _, h := range img.Blobs {
			dst := filepath.Join(blobs, h.Hex)
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
			if err := s.linkBlob(s.path(h), dst); err != nil {
				return fmt.Errorf("linking %s of %s: %w", h, img.Ref, err)
			}
		}
		manifests = append(manifests, desc{
			MediaType: img.Manifest.MediaType, Digest: img.Manifest.Digest, Size: img.Manifest.Size,
			Annotations: map[string]string{RefNameAnnotation: img.Ref.Name()},
		})
	}
	idx, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIImageIndex,
		"manifests":     manifests,
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o444); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o444)
}

// RefNameAnnotation names an image in an OCI layout's index.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

func (s *Store) linkBlob(src, dst string) error {
	if s.o.link {
		if err := os.Link(src, dst); err == nil {
			return nil
		}
		// Another file system: copy.
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// removed removes the file at p and reports whether it is gone.
func removed(p string) bool {
	err := os.Remove(p)
	return err == nil || errors.Is(err, os.ErrNotExist)
}

func mediaType(raw []byte) (types.MediaType, error) {
	var m struct {
		MediaType     types.MediaType `json:"mediaType"`
		SchemaVersion int             `json:"schemaVersion"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", err
	}
	switch {
	case m.MediaType != "":
		if !m.MediaType.IsIndex() && !m.MediaType.IsImage() {
			return "", fmt.Errorf("unsupported manifest type %s", m.MediaType)
		}
		return m.MediaType, nil
	case m.Manifests != nil:
		return types.OCIImageIndex, nil
	default:
		return types.OCIManifestSchema1, nil
	}
}

// pick chooses the manifest for platform from an index.
func pick(idx *v1.IndexManifest, p v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		if m.Platform.OS == p.OS && m.Platform.Architecture == p.Architecture &&
			(p.Variant == "" || m.Platform.Variant == p.Variant) {
			return m, nil
		}
		have = append(have, m.Platform.String())
	}
	return v1.Descriptor{}, fmt.Errorf("no image for platform %s (has %s)", p.String(), strings.Join(have, ", "))
}

var errTooLong = errors.New("more bytes than the blob's size")

// limitWriter writes to w at most left bytes; a write beyond them writes
// nothing and fails with errTooLong.
type limitWriter struct {
	w    io.Writer
	n    int64
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, errTooLong
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	l.left -= int64(n)
	return n, err
}

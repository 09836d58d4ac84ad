package basestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildgw/buildgw/builder"
	df "github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testenv"
)

// countingRegistry is ggcr's in-memory registry behind a handler that
// counts blob and manifest downloads.
type countingRegistry struct {
	host      string
	blobs     atomic.Int64 // GET of a blob
	manifests atomic.Int64 // GET of a manifest
	heads     atomic.Int64 // HEAD of a manifest
}

func startRegistry(t *testing.T) *countingRegistry {
	t.Helper()
	c := &countingRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
			c.heads.Add(1)
		}
		if r.Method == http.MethodGet {
			switch {
			case strings.Contains(r.URL.Path, "/blobs/sha256:"):
				c.blobs.Add(1)
			case strings.Contains(r.URL.Path, "/manifests/"):
				c.manifests.Add(1)
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	c.host = s.Listener.Addr().String()
	return c
}

// writeImage puts img at repo:latest.
func (c *countingRegistry) writeImage(t *testing.T, repo string, img v1.Image) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(c.host + "/" + repo + ":latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	// Only the store's downloads count.
	c.blobs.Store(0)
	c.manifests.Store(0)
	c.heads.Store(0)
	return ref
}

// push puts a random image of n layers of size bytes at repo:latest.
func (c *countingRegistry) push(t *testing.T, repo string, size int64, n int) (name.Reference, v1.Image) {
	t.Helper()
	img, err := random.Image(size, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(c.host + "/" + repo + ":latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref, img
}

func newStore(t *testing.T, opts ...Option) *Store {
	t.Helper()
	s, err := New(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFetchOnce(t *testing.T) {
	reg := startRegistry(t)
	ref, img := reg.push(t, "team/base", 4096, 3)
	want, _ := img.Digest()
	reg.blobs.Store(0)
	reg.manifests.Store(0)
	s := newStore(t)

	// Ten builds at once, then ten more: one download of each blob.
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make([]error, 10)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := s.Fetch(context.Background(), ref)
				if err == nil {
					if got.Digest != want {
						err = fmt.Errorf("digest %s, want %s", got.Digest, want)
					}
					s.Release(got)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: Fetch(%s) #%d: %v", round, ref, i, err)
			}
		}
		// The config and three layers.
		if got := reg.blobs.Load(); got != 4 {
			t.Errorf("after round %d: %d blob downloads, want 4", round, got)
		}
		if got := reg.manifests.Load(); got != 1 {
			t.Errorf("after round %d: %d manifest downloads, want 1", round, got)
		}
	}
	if st := s.Stats(); st.Downloads != 5 {
		t.Errorf("Stats().Downloads = %d, want 5 (manifest, config, 3 layers)", st.Downloads)
	}

	// A store reopened on the same directory downloads nothing either.
	s2, err := New(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Fetch(context.Background(), ref)
	if err != nil {
		t.Fatalf("Fetch after reopening: %v", err)
	}
	s2.Release(got)
	if n := s2.Stats().Downloads; n != 0 || reg.blobs.Load() != 4 {
		t.Errorf("reopened store: %d downloads, %d blob GETs; want 0 and 4", n, reg.blobs.Load())
	}
}

// A stored image by digest costs one HEAD, in its own repository, and no
// download. (It once cost no request at all, which let any repository's
// name serve a stored digest: see TestFetchByDigestOtherRepository.)
func TestFetchByDigestStored(t *testing.T) {
	reg := startRegistry(t)
	ref, img := reg.push(t, "team/base", 1024, 1)
	d, _ := img.Digest()
	s := newStore(t)
	got, err := s.Fetch(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	s.Release(got)
	byDigest, err := name.ParseReference(ref.Context().String() + "@" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	before := reg.blobs.Load() + reg.manifests.Load()
	heads := reg.heads.Load()
	got, err = s.Fetch(context.Background(), byDigest)
	if err != nil {
		t.Fatalf("Fetch(%s) of a stored image: %v", byDigest, err)
	}
	s.Release(got)
	if after := reg.blobs.Load() + reg.manifests.Load(); after != before {
		t.Errorf("Fetch(%s) of a stored image made %d downloads, want 0", byDigest, after-before)
	}
	if n := reg.heads.Load() - heads; n != 1 {
		t.Errorf("Fetch(%s) of a stored image made %d HEAD requests, want 1", byDigest, n)
	}
}

// The store is shared by every tenant and keyed by digest; the policy
// allows repositories. A digest stored for one repository must not be
// served under the name of another that does not hold it: tenant B,
// allowed teamb/**, names tenant A's private image by its digest.
func TestFetchByDigestOtherRepository(t *testing.T) {
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}},
	})
	for _, tc := range []struct {
		name  string
		write func(name.Reference) error
		dig   func() (v1.Hash, error)
	}{
		{"image", func(r name.Reference) error { return remote.Write(r, img) }, img.Digest},
		{"index", func(r name.Reference) error { return remote.WriteIndex(r, idx) }, idx.Digest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			reg := startRegistry(t)
			d, err := tc.dig()
			if err != nil {
				t.Fatal(err)
			}
			private, err := name.ParseReference(reg.host + "/teama/private:1")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.write(private); err != nil {
				t.Fatal(err)
			}
			// B's repository exists, with an image of its own.
			reg.push(t, "teamb/anything", 1024, 1)
			s := newStore(t)
			got, err := s.Fetch(ctx, private)
			if err != nil {
				t.Fatalf("Fetch(%s): %v", private, err)
			}
			s.Release(got)

			other, err := name.ParseReference(reg.host + "/teamb/anything@" + d.String())
			if err != nil {
				t.Fatal(err)
			}
			heads := reg.heads.Load()
			if got, err := s.Fetch(ctx, other); err == nil || !strings.Contains(err.Error(), "resolving "+other.String()) {
				s.Release(got)
				t.Errorf("Fetch(%s), a digest stored for another repository = %v, want an error resolving it", other, err)
			}
			if reg.heads.Load() == heads {
				t.Errorf("Fetch(%s) asked the registry nothing, want a HEAD in teamb/anything", other)
			}
			// The submission's check of ONBUILD triggers reads configs the same way.
			if _, err := s.Config(ctx, other); err == nil {
				t.Errorf("Config(%s) = nil error, want one", other)
			}

			// Once B's repository holds the digest, the stored blobs serve it.
			copied, err := name.ParseReference(reg.host + "/teamb/anything:copy")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.write(copied); err != nil {
				t.Fatal(err)
			}
			blobs, manifests := reg.blobs.Load(), reg.manifests.Load()
			got, err = s.Fetch(ctx, other)
			if err != nil {
				t.Fatalf("Fetch(%s), now held by teamb/anything: %v", other, err)
			}
			s.Release(got)
			if got.Digest != d {
				t.Errorf("Fetch(%s).Digest = %s, want %s", other, got.Digest, d)
			}
			if b, m := reg.blobs.Load()-blobs, reg.manifests.Load()-manifests; b != 0 || m != 0 {
				t.Errorf("Fetch(%s) of stored blobs downloaded %d blobs and %d manifests, want none", other, b, m)
			}
		})
	}
}

func TestEviction(t *testing.T) {
	reg := startRegistry(t)
	refA, _ := reg.push(t, "team/a", 10000, 2)
	refB, _ := reg.push(t, "team/b", 10000, 2)
	// Room for one image (about 20 KB of layers), not two.
	s := newStore(t, WithMaxBytes(30000))
	ctx := context.Background()

	a, err := s.Fetch(ctx, refA)
	if err != nil {
		t.Fatal(err)
	}
	aBlobs := append([]v1.Hash(nil), a.Blobs...)
	// While a build holds A, fetching B must not evict A's blobs.
	b, err := s.Fetch(ctx, refB)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range aBlobs {
		if !s.Has(h) {
			t.Errorf("blob %s of a leased image was evicted", h)
		}
	}
	// Once released, the least recently used (A) goes first.
	s.Release(a)
	s.Release(b)
	if s.Size() > 30000 {
		t.Errorf("Size() = %d after release, want at most 30000", s.Size())
	}
	for _, h := range aBlobs {
		if s.Has(h) {
			t.Errorf("blob %s of the least recently used image still stored", h)
		}
	}
	b2, err := s.Fetch(ctx, refB)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(b2)
	for _, h := range b2.Blobs {
		if !s.Has(h) {
			t.Errorf("blob %s of the most recently used image was evicted", h)
		}
	}
	if n := s.Stats().Evictions; n == 0 {
		t.Errorf("Stats().Evictions = 0, want some")
	}
	files, _ := os.ReadDir(s.blobDir())
	var onDisk int64
	for _, f := range files {
		fi, _ := f.Info()
		onDisk += fi.Size()
	}
	if onDisk != s.Size() {
		t.Errorf("blobs on disk hold %d bytes, Size() = %d", onDisk, s.Size())
	}
	// An evicted blob's record of origins goes with it.
	records, _ := os.ReadDir(s.originDir())
	if len(records) != len(files) {
		t.Errorf("%d records of origins for %d stored blobs, want one each", len(records), len(files))
	}
	for _, r := range records {
		if _, err := os.Stat(filepath.Join(s.blobDir(), r.Name())); err != nil {
			t.Errorf("record of origins for %s, which is not stored: %v", r.Name(), err)
		}
	}
}

func TestPrepare(t *testing.T) {
	reg := startRegistry(t)
	refA, imgA := reg.push(t, "team/a", 1024, 1)
	refB, imgB := reg.push(t, "team/b", 1024, 2)
	s := newStore(t, WithCopies())

	ws := t.TempDir()
	ctxDir := filepath.Join(ws, "context")
	os.Mkdir(ctxDir, 0o755)
	dockerfile := `ARG A
FROM ${A} AS deps
RUN true
FROM scratch AS empty
FROM deps AS mid
COPY --from=` + refB.String() + ` /x /x
FROM mid
`
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	args := map[string]string{"A": refA.String()}
	analysis, err := df.Analyze([]byte(dockerfile), args, "")
	if err != nil {
		t.Fatal(err)
	}
	req := &builder.Request{Workspace: ws, ContextDir: ctxDir, Dockerfile: "Dockerfile", Analysis: analysis, BuildArgs: args}
	var logBuf strings.Builder
	got, err := s.Prepare(context.Background(), req, &logBuf)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	dA, _ := imgA.Digest()
	dB, _ := imgB.Digest()
	want := []builder.BaseImage{{Name: refA.Name(), Digest: dA.String()}, {Name: refB.Name(), Digest: dB.String()}}
	if fmt.Sprint(got.Images) != fmt.Sprint(want) {
		t.Errorf("Prepare: images %v, want %v", got.Images, want)
	}
	if got.Final == nil || *got.Final != want[0] {
		t.Errorf("Prepare: final base %v, want %v", got.Final, want[0])
	}
	if !strings.Contains(logBuf.String(), dA.String()) {
		t.Errorf("Prepare: log %q does not name %s", logBuf.String(), dA)
	}
	// The layout holds both images under their names, complete.
	p, err := layout.FromPath(got.Layout)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range m.Manifests {
		if d.Annotations[RefNameAnnotation] != want[i].Name || d.Digest.String() != want[i].Digest {
			t.Errorf("layout entry %d = %s %v, want %s named %s", i, d.Digest, d.Annotations, want[i].Digest, want[i].Name)
		}
		img, err := p.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("layer of %s: %v", want[i].Name, err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Errorf("layer of %s: %v", want[i].Name, err)
			}
			rc.Close()
		}
	}
}

func TestFetchErrors(t *testing.T) {
	reg := startRegistry(t)
	s := newStore(t)
	ref, _ := name.ParseReference(reg.host + "/team/missing:latest")
	if _, err := s.Fetch(context.Background(), ref); err == nil || !strings.Contains(err.Error(), "team/missing") {
		t.Errorf("Fetch(%s) = %v, want an error naming it", ref, err)
	}
	if _, err := New(t.TempDir(), WithMaxBytes(0)); err == nil {
		t.Errorf("New(WithMaxBytes(0)) = nil error, want one")
	}
}

// lyingRegistry is a registry that a tenant runs, in front of ggcr's
// in-memory registry: it answers every manifest request with manifest
// (and HEAD with digest), and every blob request with blob (404 if nil).
func lyingRegistry(t *testing.T, digest v1.Hash, mt types.MediaType, manifest, blob []byte) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Docker-Content-Digest", digest.String())
			w.Header().Set("Content-Type", string(mt))
			if r.Method == http.MethodHead {
				w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
				return
			}
			if manifest == nil {
				http.NotFound(w, r)
				return
			}
			w.Write(manifest)
		case strings.Contains(r.URL.Path, "/blobs/"):
			if blob == nil {
				http.NotFound(w, r)
				return
			}
			w.Write(blob)
		default:
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// The store is shared by every tenant; a policy may let a tenant build
// FROM a registry the tenant runs. That registry must not be served the
// stored blobs of another tenant's private image, from another registry,
// by claiming their digests: a stored blob counts only for a registry
// that served its bytes.
func TestFetchFromLyingRegistry(t *testing.T) {
	ctx := context.Background()
	regA := startRegistry(t)
	private, img := regA.push(t, "teama/private", 2048, 2)
	d, _ := img.Digest()
	mt, _ := img.MediaType()
	raw, _ := img.RawManifest()
	m, _ := img.Manifest()
	crafted := m.DeepCopy()
	crafted.Annotations = map[string]string{"crafted": "listing another tenant's blobs"}
	craftedRaw, err := json.Marshal(crafted)
	if err != nil {
		t.Fatal(err)
	}
	craftedDigest, _, _ := v1.SHA256(bytes.NewReader(craftedRaw))

	for _, tc := range []struct {
		name      string
		host      string
		ref       string // after the repository
		downloads int    // the manifest, if the lying registry serves it
	}{
		// It claims the digest but cannot serve the manifest's bytes.
		{"claimed digest", lyingRegistry(t, d, mt, nil, nil), "@" + d.String(), 0},
		{"claimed digest by tag", lyingRegistry(t, d, mt, nil, nil), ":latest", 0},
		// It knows the manifest, but not the blobs.
		{"copied manifest", lyingRegistry(t, d, mt, raw, nil), ":latest", 1},
		// Its own manifest lists the private config and layers; it serves
		// other bytes under their digests.
		{"crafted manifest", lyingRegistry(t, craftedDigest, mt, craftedRaw, []byte("not the blob")), ":latest", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			got, err := s.Fetch(ctx, private)
			if err != nil {
				t.Fatalf("Fetch(%s): %v", private, err)
			}
			s.Release(got)
			ref, err := name.ParseReference(tc.host + "/tenantb/base" + tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			// Twice: a failed fetch records nothing for the lying registry.
			for range 2 {
				if got, err := s.Fetch(ctx, ref); err == nil {
					s.Release(got)
					t.Errorf("Fetch(%s), stored blobs it never served = %s, want an error", ref, got.Digest)
				}
			}
			if _, err := s.Config(ctx, ref); err == nil {
				t.Errorf("Config(%s) = nil error, want one", ref)
			}
			// The private image's manifest, config and 2 layers, and what
			// the lying registry did serve.
			if st := s.Stats(); st.Downloads != 4+tc.downloads {
				t.Errorf("Stats().Downloads = %d, want %d", st.Downloads, 4+tc.downloads)
			}
			for _, h := range append(m.Layers, m.Config) {
				if o, _ := s.readOrigins(h.Digest); !slices.Equal(o, []string{private.Context().RegistryStr()}) {
					t.Errorf("origins of %s = %v, want only %s", h.Digest, o, private.Context().RegistryStr())
				}
			}
		})
	}
}

// The same image in two registries, each of which serves it: both
// fetches succeed, the second downloads every blob again (from its own
// registry), and the store holds the bytes once.
func TestFetchSameImageTwoRegistries(t *testing.T) {
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	m, _ := img.Manifest()
	want := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		want += l.Size
	}
	const blobs = 5 // manifest, config, 3 layers
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("concurrent=%v", concurrent), func(t *testing.T) {
			ctx := context.Background()
			var regs [2]*countingRegistry
			var refs [2]name.Reference
			for i := range regs {
				regs[i] = startRegistry(t)
				refs[i] = regs[i].writeImage(t, "team/base", img)
			}
			s := newStore(t)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, ref := range refs {
				fetch := func() {
					got, err := s.Fetch(ctx, ref)
					if err == nil {
						s.Release(got)
					}
					errs[i] = err
				}
				if !concurrent {
					fetch()
					continue
				}
				wg.Add(1)
				go func() { defer wg.Done(); fetch() }()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Fetch(%s): %v", refs[i], err)
				}
			}
			if st := s.Stats(); st.Downloads != 2*blobs || st.Hits != 0 {
				t.Errorf("Stats() = %+v, want %d downloads (each blob from each registry) and no hits", st, 2*blobs)
			}
			for i, reg := range regs {
				if b, m := reg.blobs.Load(), reg.manifests.Load(); b != blobs-1 || m != 1 {
					t.Errorf("registry %d: %d blob and %d manifest downloads, want %d and 1", i, b, m, blobs-1)
				}
			}
			if got := s.Size(); got != want {
				t.Errorf("Size() = %d, want %d (each blob once)", got, want)
			}
			// Now stored for both.
			for _, ref := range refs {
				got, err := s.Fetch(ctx, ref)
				if err != nil {
					t.Fatalf("Fetch(%s) again: %v", ref, err)
				}
				s.Release(got)
			}
			if st := s.Stats(); st.Downloads != 2*blobs || st.Hits != 2*blobs {
				t.Errorf("after fetching both again, Stats() = %+v, want %d downloads and %d hits", st, 2*blobs, 2*blobs)
			}
		})
	}
}

// The registries that served a blob survive a restart; a blob stored
// before they were recorded counts as served by none.
func TestOriginsAfterRestart(t *testing.T) {
	ctx := context.Background()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	regA, regB := startRegistry(t), startRegistry(t)
	refA, refB := regA.writeImage(t, "team/base", img), regB.writeImage(t, "team/base", img)
	dir := t.TempDir()
	const blobs = 4 // manifest, config, 2 layers
	open := func() *Store {
		t.Helper()
		s, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fetch := func(s *Store, ref name.Reference, downloads int) {
		t.Helper()
		before := s.Stats().Downloads
		got, err := s.Fetch(ctx, ref)
		if err != nil {
			t.Fatalf("Fetch(%s): %v", ref, err)
		}
		s.Release(got)
		if n := s.Stats().Downloads - before; n != downloads {
			t.Errorf("Fetch(%s) made %d downloads, want %d", ref, n, downloads)
		}
	}
	fetch(open(), refA, blobs)
	size := open().Size()

	s := open()
	fetch(s, refA, 0)
	fetch(s, refB, blobs)
	if s.Size() != size {
		t.Errorf("Size() = %d after fetching from a second registry, want %d", s.Size(), size)
	}
	s = open()
	fetch(s, refA, 0)
	fetch(s, refB, 0)

	// A store from before origins were recorded.
	if err := os.RemoveAll(filepath.Join(dir, "origins")); err != nil {
		t.Fatal(err)
	}
	s = open()
	if s.Size() != size {
		t.Errorf("Size() = %d of blobs without origins, want %d", s.Size(), size)
	}
	fetch(s, refA, blobs)
	fetch(open(), refA, 0)
	fetch(open(), refB, blobs)
}

// hostileRegistry is a registry a tenant runs, in front of ggcr's
// in-memory registry: a GET of a blob in serve is answered by its
// function, given the blob's real bytes; every other request by the
// registry.
func hostileRegistry(t *testing.T, serve map[v1.Hash]func(w http.ResponseWriter, blob []byte)) *countingRegistry {
	t.Helper()
	c := &countingRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			c.blobs.Add(1)
			h, err := v1.NewHash(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			if f := serve[h]; err == nil && f != nil {
				rec := httptest.NewRecorder()
				reg.ServeHTTP(rec, r)
				f(w, rec.Body.Bytes())
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	c.host = s.Listener.Addr().String()
	return c
}

// endless serves the blob, then zeros without end (16 MiB, so that a
// test of an unbounded read ends), chunked.
func endless(w http.ResponseWriter, blob []byte) {
	w.Write(blob)
	zeros := make([]byte, 32<<10)
	for n := 0; n < 16<<20; n += len(zeros) {
		if _, err := w.Write(zeros); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

// short serves the first half of the blob, chunked.
func short(w http.ResponseWriter, blob []byte) {
	w.Write(blob[:len(blob)/2])
	w.(http.Flusher).Flush()
}

// bodyCounter is the store's transport: it counts the bytes of blob
// bodies the store reads from the network.
type bodyCounter struct{ n atomic.Int64 }

func (c *bodyCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && strings.Contains(r.URL.Path, "/blobs/") {
		resp.Body = &countedBody{resp.Body, &c.n}
	}
	return resp, err
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// rawManifest is a manifest pushed as is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// A registry a tenant runs must not fill the store's disk: each blob is
// read no further than its size in the manifest, and a manifest that
// gives a blob no size, or more than a blob may have, costs no download.
func TestFetchBlobBounded(t *testing.T) {
	ctx := context.Background()
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	cfg, layer := m.Config, m.Layers[0]
	// The same image with its second layer's size replaced.
	withSize := func(size int64) *v1.Manifest {
		c := m.DeepCopy()
		c.Layers[1].Size = size
		return c
	}
	for _, tc := range []struct {
		name     string
		serve    map[v1.Hash]func(http.ResponseWriter, []byte)
		manifest *v1.Manifest // pushed instead of img's
		opts     []Option
		blob     v1.Hash // the blob refused
		want     string
		maxRead  int64 // of blob bodies
	}{
		{"endless layer", map[v1.Hash]func(http.ResponseWriter, []byte){layer.Digest: endless}, nil, nil,
			layer.Digest, fmt.Sprintf("served more than the %d bytes of %s", layer.Size, layer.Digest), cfg.Size + layer.Size + 1},
		{"endless config", map[v1.Hash]func(http.ResponseWriter, []byte){cfg.Digest: endless}, nil, nil,
			cfg.Digest, fmt.Sprintf("served more than the %d bytes of %s", cfg.Size, cfg.Digest), cfg.Size + 1},
		{"short layer", map[v1.Hash]func(http.ResponseWriter, []byte){layer.Digest: short}, nil, nil,
			layer.Digest, fmt.Sprintf("served %d of the %d bytes of %s", layer.Size/2, layer.Size, layer.Digest), cfg.Size + layer.Size},
		{"layer beyond the blob bound", nil, withSize(1 << 40), []Option{WithMaxBlobBytes(1 << 20)},
			m.Layers[1].Digest, fmt.Sprintf("has %d bytes, more than the %d a layer may have", int64(1<<40), 1<<20), 0},
		{"layer of no size", nil, withSize(-1), nil,
			m.Layers[1].Digest, "no size given", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := hostileRegistry(t, tc.serve)
			ref := reg.writeImage(t, "tenant/base", img)
			if tc.manifest != nil {
				raw, err := json.Marshal(tc.manifest)
				if err != nil {
					t.Fatal(err)
				}
				if err := remote.Put(ref, rawManifest{raw, tc.manifest.MediaType}); err != nil {
					t.Fatal(err)
				}
			}
			var read bodyCounter
			s := newStore(t, append(tc.opts, WithTransport(func(name.Registry) http.RoundTripper { return &read }))...)
			fetches := []struct {
				name  string
				fetch func() error
			}{
				{"Fetch", func() error {
					got, err := s.Fetch(ctx, ref)
					s.Release(got)
					return err
				}},
			}
			if tc.blob == cfg.Digest {
				// At submission, inside the request.
				fetches = append(fetches, struct {
					name  string
					fetch func() error
				}{"Config", func() error { _, err := s.Config(ctx, ref); return err }})
			}
			for _, f := range fetches {
				read.n.Store(0)
				err := f.fetch()
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), reg.host) {
					t.Errorf("%s(%s) = %v, want an error naming %s and saying %q", f.name, ref, err, reg.host, tc.want)
				}
				if n := read.n.Load(); n > tc.maxRead {
					t.Errorf("%s(%s) read %d bytes of blobs, want at most %d", f.name, ref, n, tc.maxRead)
				}
				if s.Has(tc.blob) {
					t.Errorf("%s(%s): blob %s is stored", f.name, ref, tc.blob)
				}
				if tmp, _ := os.ReadDir(s.tmpDir()); len(tmp) != 0 {
					t.Errorf("%s(%s) left %d files in the store's temporary directory", f.name, ref, len(tmp))
				}
			}
		})
	}
}

// One build cannot take the store beyond its bound: the blobs of all its
// images together, stored or not, must fit in it, and are counted before
// any layer is fetched.
func TestPrepareWithinBound(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	refA, imgA := reg.push(t, "team/a", 10000, 2)
	refB, imgB := reg.push(t, "team/b", 10000, 2)
	// Room for one image (about 20 KB of layers), not two.
	const bound = 30000
	text := "FROM " + refA.String() + " AS unused\nFROM " + refB.String() + "\n"
	analysis, err := df.Analyze([]byte(text), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprintf("stored=%v", stored), func(t *testing.T) {
			s := newStore(t, WithMaxBytes(bound), WithCopies())
			if stored {
				// A's blobs are stored already: they count all the same.
				a, err := s.Fetch(ctx, refA)
				if err != nil {
					t.Fatal(err)
				}
				s.Release(a)
			}
			before, size := reg.blobs.Load(), s.Size()
			ws := t.TempDir()
			_, err := s.Prepare(ctx, &builder.Request{Workspace: ws, Analysis: analysis}, io.Discard)
			want := fmt.Sprintf("the base image store's bound of %d bytes (base_images.max_bytes)", bound)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Prepare(FROM %s, FROM %s) = %v, want an error naming %q", refA, refB, err, want)
			}
			// A's config at most (if not stored): B's manifest already
			// says it does not fit.
			if n := reg.blobs.Load() - before; n > 1 {
				t.Errorf("Prepare downloaded %d blobs, want at most A's config", n)
			}
			layers := func(img v1.Image) (n int) {
				m, _ := img.Manifest()
				for _, l := range m.Layers {
					if s.Has(l.Digest) {
						n++
					}
				}
				return n
			}
			wantA := 0
			if stored {
				wantA = 2
			}
			if a, b := layers(imgA), layers(imgB); a != wantA || b != 0 {
				t.Errorf("after a refused Prepare, %d layers of A and %d of B are stored, want %d and 0", a, b, wantA)
			}
			if s.Size() > size+2000 {
				t.Errorf("Size() = %d after a refused Prepare, want no more than A's manifest and config beyond the %d before", s.Size(), size)
			}
			if _, err := os.Stat(filepath.Join(ws, LayoutDir, "index.json")); err == nil {
				t.Errorf("Prepare left a layout after a refusal")
			}
			// Each image alone fits.
			for _, ref := range []name.Reference{refA, refB} {
				img, err := s.Fetch(ctx, ref)
				if err != nil {
					t.Errorf("Fetch(%s) = %v, want it within the bound", ref, err)
				}
				s.Release(img)
			}
		})
	}
	// One image beyond the bound is refused before its layers.
	s := newStore(t, WithMaxBytes(15000))
	if _, err := s.Fetch(ctx, refA); err == nil || !strings.Contains(err.Error(), "(base_images.max_bytes)") {
		t.Errorf("Fetch(%s) into a store of 15000 bytes = %v, want an error naming base_images.max_bytes", refA, err)
	}
	m, _ := imgA.Manifest()
	for _, l := range m.Layers {
		if s.Has(l.Digest) {
			t.Errorf("layer %s of an image beyond the bound is stored", l.Digest)
		}
	}
}

// A stored blob counts against the bound by the size the manifest gives:
// a manifest that gives a stored blob less is refused.
func TestFetchStoredBlobSize(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	ref, img := reg.push(t, "team/base", 4096, 1)
	s := newStore(t)
	got, err := s.Fetch(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	s.Release(got)
	m, _ := img.Manifest()
	m = m.DeepCopy()
	m.Layers[0].Size = 1
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	small := ref.Context().Tag("small")
	if err := remote.Put(small, rawManifest{raw, m.MediaType}); err != nil {
		t.Fatal(err)
	}
	want := "not the 1 its descriptor gives"
	if got, err := s.Fetch(ctx, small); err == nil || !strings.Contains(err.Error(), want) {
		s.Release(got)
		t.Errorf("Fetch(%s) = %v, want an error saying %q", small, err, want)
	}
}

// A registry a tenant runs must not cost the gateway more memory than a
// manifest may have: the answer to a manifest's GET is read no further
// than MaxMetadataBytes, whatever the HEAD said, at submission (Config)
// as when the build runs (Fetch).
func TestFetchManifestBounded(t *testing.T) {
	ctx := context.Background()
	// Below ggcr's own bound of 100 MiB, and far above a manifest's.
	const huge = 96 << 20
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// serve answers the GET of a manifest, given its real bytes, and
		// counts the bytes it managed to send in sent.
		serve func(w http.ResponseWriter, r *http.Request, manifest []byte, sent *atomic.Int64)
	}{
		{"endless answer", func(w http.ResponseWriter, _ *http.Request, m []byte, sent *atomic.Int64) {
			sendHuge(w, m, huge, sent)
		}},
		{"answer of a huge length", func(w http.ResponseWriter, _ *http.Request, m []byte, sent *atomic.Int64) {
			w.Header().Set("Content-Length", strconv.Itoa(huge))
			sendHuge(w, m, huge, sent)
		}},
		{"redirect to an endless answer", func(w http.ResponseWriter, r *http.Request, m []byte, sent *atomic.Int64) {
			if !strings.HasPrefix(r.URL.Path, "/elsewhere/") {
				http.Redirect(w, r, "/elsewhere"+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
			sendHuge(w, m, huge, sent)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int64
			reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && (strings.Contains(r.URL.Path, "/manifests/") || strings.HasPrefix(r.URL.Path, "/elsewhere/")) {
					r2 := r.Clone(r.Context())
					r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/elsewhere")
					rec := httptest.NewRecorder()
					reg.ServeHTTP(rec, r2)
					tc.serve(w, r, rec.Body.Bytes(), &sent)
					return
				}
				reg.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			host := srv.Listener.Addr().String()
			ref, err := name.ParseReference(host + "/tenant/base:latest")
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img); err != nil {
				t.Fatal(err)
			}
			s := newStore(t)
			want := fmt.Sprintf("more than the %d bytes a manifest may have", MaxMetadataBytes)
			for _, f := range []struct {
				name  string
				fetch func() error
			}{
				{"Fetch", func() error {
					got, err := s.Fetch(ctx, ref)
					s.Release(got)
					return err
				}},
				// At submission, inside the request.
				{"Config", func() error { _, err := s.Config(ctx, ref); return err }},
			} {
				sent.Store(0)
				var err error
				growth := testenv.PeakHeapGrowth(func() { err = f.fetch() })
				t.Logf("%s(%s) = %v; the registry sent %.1f MiB, heap in use grew by %.1f MiB at most", f.name, ref, err, float64(sent.Load())/(1<<20), float64(growth)/(1<<20))
				if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), digest.String()) {
					t.Errorf("%s(%s) = %v, want an error naming %s and %s and saying %q", f.name, ref, err, host, digest, want)
				}
				if growth > huge/2 {
					t.Errorf("%s(%s): heap in use grew by %d MiB on a %d MiB manifest answer, want < %d MiB", f.name, ref, growth>>20, huge>>20, huge>>21)
				}
				if s.Has(digest) {
					t.Errorf("%s(%s): manifest %s is stored", f.name, ref, digest)
				}
			}
		})
	}
}

// sendHuge sends b, then zeros up to n bytes in all, chunked, until the
// client goes away, counting what it sent.
func sendHuge(w http.ResponseWriter, b []byte, n int64, sent *atomic.Int64) {
	if _, err := w.Write(b); err != nil {
		return
	}
	sent.Add(int64(len(b)))
	zeros := make([]byte, 32<<10)
	for left := n - int64(len(b)); left > 0; left -= int64(len(zeros)) {
		k, err := w.Write(zeros[:min(left, int64(len(zeros)))])
		sent.Add(int64(k))
		if err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

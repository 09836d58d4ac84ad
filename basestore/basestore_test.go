package basestore

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
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

	"github.com/buildgw/buildgw/builder"
	df "github.com/buildgw/buildgw/dockerfile"
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

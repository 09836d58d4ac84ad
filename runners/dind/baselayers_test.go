package dind

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/testenv"
)

// pushBase pushes busybox with a small Docker layer and a large OCI one
// (streamed rather than held in memory by the export) to reg, and returns
// its reference and the image.
func pushBase(t *testing.T, reg string) (string, v1.Image) {
	t.Helper()
	img, err := baseimage.Busybox(testenv.BusyboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	small, err := random.Layer(100, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	large, err := random.Layer(3*maxSmallEntry, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, small, large); err != nil {
		t.Fatal(err)
	}
	ref := reg + "/team/base:1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("pushing the base: %v", err)
	}
	return ref, img
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// roundTrip pushes img to an in-memory registry, pulls it back and
// validates it (digests, diff IDs, config), as a client pulling the
// gateway's push would.
func roundTrip(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	ref, err := name.NewTag(testenv.Registry(t)+"/out/img:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing the built image: %v", err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pulling the built image: %v", err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("validate.Image(pulled) = %v", err)
	}
	return got
}

// TestExportKeepsBaseLayers builds on a base of three layers (gzip Docker
// and OCI media types, small and large) and checks that the built image's
// leading layers are the final base's blobs, with their digests, that the
// pushed image is valid, and that the build's own layers follow; also
// when the final stage's base is not the first stage's, or is scratch.
func TestExportKeepsBaseLayers(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.Registry(t)
	base, baseImg := pushBase(t, reg)
	busybox := testenv.Busybox(t, reg)
	bbImg, err := remote.Image(mustRef(t, busybox))
	if err != nil {
		t.Fatal(err)
	}
	baseLayers, bbLayers := layerDigests(t, baseImg), layerDigests(t, bbImg)

	for _, c := range []struct {
		name, dockerfile string
		// want: the leading layers of the built image; extra: how many
		// layers the build adds.
		want  []v1.Hash
		extra int
		files map[string]string
	}{
		{
			name:       "final base",
			dockerfile: "ARG BASE\nFROM ${BASE}\nRUN echo built > /built\n",
			want:       baseLayers, extra: 1,
			files: map[string]string{"built": "built\n"},
		},
		{
			name:       "multi-stage, final stage on the base",
			dockerfile: "ARG BASE\nARG BB\nFROM ${BB} AS first\nRUN echo first > /first\nFROM ${BASE}\nCOPY --from=first /first /first\nRUN echo built > /built\n",
			want:       baseLayers, extra: 2,
			files: map[string]string{"first": "first\n", "built": "built\n"},
		},
		{
			// busybox's layer is also the base's first: the final base
			// is busybox, whose blob is used.
			name:       "multi-stage, final stage on another base",
			dockerfile: "ARG BASE\nARG BB\nFROM ${BASE} AS first\nRUN echo first > /first\nFROM ${BB}\nCOPY --from=first /first /first\n",
			want:       bbLayers, extra: 1,
			files: map[string]string{"first": "first\n"},
		},
		{
			name:       "multi-stage, final stage on scratch",
			dockerfile: "ARG BASE\nFROM ${BASE} AS first\nRUN echo first > /first\nFROM scratch\nCOPY --from=first /first /first\n",
			want:       nil, extra: 1,
			files: map[string]string{"first": "first\n"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := newRequest(t, reg, map[string]string{"Dockerfile": c.dockerfile}, map[string]string{"BASE": base, "BB": busybox})
			var log strings.Builder
			img, err := r.Build(context.Background(), req, &log)
			if err != nil {
				t.Fatalf("Build: %v\n%s", err, log.String())
			}
			got := layerDigests(t, img)
			if len(got) != len(c.want)+c.extra {
				t.Fatalf("built image has %d layers, want %d and %d of the build\n%s", len(got), len(c.want), c.extra, log.String())
			}
			for i, w := range c.want {
				if got[i] != w {
					t.Errorf("layer %d is %s, want the base's %s", i, got[i], w)
				}
			}
			if want := fmt.Sprintf("%d of them the base's as they are", len(c.want)); !strings.Contains(log.String(), want) {
				t.Errorf("log does not say %q:\n%s", want, log.String())
			}
			pulled := roundTrip(t, img)
			if pd := layerDigests(t, pulled); len(pd) != len(got) || pd[0] != got[0] {
				t.Errorf("pulled image layers %v, want %v", pd, got)
			}
			files := imageFiles(t, pulled)
			for f, want := range c.files {
				if files[f] != want {
					t.Errorf("image file %s = %q, want %q", f, files[f], want)
				}
			}
		})
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestExportSizeCollision exports a built image again with a base whose
// layer list claims a layer of the same uncompressed size as the build's
// own large layer: that layer is hashed, not compressed, then found not
// to be the base's, and the export says so (errRecompress, on which Build
// exports again); exporting without skipping then gives a valid image
// with the build's layer compressed and the real base layers kept.
func TestExportSizeCollision(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.Registry(t)
	base, baseImg := pushBase(t, reg)
	req := newRequest(t, reg, map[string]string{
		"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN head -c 3000000 /dev/urandom > /big\n",
	}, map[string]string{"BASE": base})
	bases, err := verifyBase(context.Background(), req.BaseImages)
	if err != nil || len(bases) != 3 {
		t.Fatalf("verifyBase = %d layers, %v; want 3", len(bases), err)
	}
	var collided, again v1.Image
	var collideErr, againErr error
	testHookBeforeStop = func(d *Daemon) {
		tag := "buildgw/job:" + tagName(req.ID)
		// The RUN layer's uncompressed size, from a plain export.
		plain, _, err := d.exportLayout(context.Background(), tag, filepath.Join(req.Workspace, "out1"), baseReuse{})
		if err != nil {
			collideErr = err
			return
		}
		size, err := lastLayerSize(plain)
		if err != nil {
			collideErr = err
			return
		}
		// A fake fourth base layer: the RUN layer's size, another diff ID.
		fake := bases[0]
		fake.raw = size
		reuse := baseReuse{layout: req.BaseImages.Layout, layers: append(append([]baseLayer{}, bases...), fake), skip: true}
		collided, _, collideErr = d.exportLayout(context.Background(), tag, filepath.Join(req.Workspace, "out2"), reuse)
		reuse.skip = false
		again, _, againErr = d.exportLayout(context.Background(), tag, filepath.Join(req.Workspace, "out3"), reuse)
	}
	t.Cleanup(func() { testHookBeforeStop = nil })
	var log strings.Builder
	if _, err := r.Build(context.Background(), req, &log); err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	if !errors.Is(collideErr, errRecompress) || collided != nil {
		t.Errorf("export with a layer of a base layer's size = %v, want errRecompress", collideErr)
	}
	if againErr != nil {
		t.Fatalf("export without skipping: %v", againErr)
	}
	got, want := layerDigests(t, again), layerDigests(t, baseImg)
	if len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("layers %v, want the base's %v and one", got, want)
	}
	roundTrip(t, again)
}

func lastLayerSize(img v1.Image) (int64, error) {
	ls, err := img.Layers()
	if err != nil {
		return 0, err
	}
	rc, err := ls[len(ls)-1].Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}

// BenchmarkExportDebianBase measures the export of an image built on a
// Debian minbase (one layer of about 200 MB uncompressed): each iteration
// exports the same built image twice in alternating order, once keeping
// the base's layer (the export as built) and once compressing every layer
// (as before), and reports both medians.
//
//	go test -run '^$' -bench BenchmarkExportDebianBase -benchtime 5x ./runners/dind/
func BenchmarkExportDebianBase(b *testing.B) {
	r := requireDocker(b)
	reg := testenv.Registry(b)
	img, err := baseimage.FromDir(testenv.Minbase(b), []string{"/bin/sh"})
	if err != nil {
		b.Fatal(err)
	}
	tag, err := name.NewTag(reg+"/debian/minbase:bookworm", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		b.Fatal(err)
	}
	req := newRequest(b, reg, map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN echo built > /built\n"}, map[string]string{"BASE": tag.String()})
	verifyStart := time.Now()
	bases, err := verifyBase(context.Background(), req.BaseImages)
	verifyTook := time.Since(verifyStart)
	if err != nil || len(bases) != 1 {
		b.Fatalf("verifyBase = %d layers, %v", len(bases), err)
	}
	var kept, all []time.Duration
	var keptSize, allSize int64
	var runErr error
	testHookBeforeStop = func(d *Daemon) {
		jtag := "buildgw/job:" + tagName(req.ID)
		for i := 0; i < b.N; i++ {
			for _, keep := range []bool{i%2 == 0, i%2 != 0} {
				reuse := baseReuse{}
				if keep {
					reuse = baseReuse{layout: req.BaseImages.Layout, layers: bases, skip: true}
				}
				out := filepath.Join(req.Workspace, fmt.Sprintf("bench-%d-%v", i, keep))
				start := time.Now()
				_, st, err := d.exportLayout(context.Background(), jtag, out, reuse)
				took := time.Since(start)
				if err != nil {
					runErr = err
					return
				}
				if keep {
					if st.reused != 1 {
						runErr = fmt.Errorf("export reused %d base layers, want 1", st.reused)
						return
					}
					kept, keptSize = append(kept, took), st.compressed
				} else {
					all, allSize = append(all, took), st.compressed
				}
				os.RemoveAll(out)
			}
		}
	}
	b.Cleanup(func() { testHookBeforeStop = nil })
	var log strings.Builder
	b.ResetTimer()
	if _, err := r.Build(context.Background(), req, &log); err != nil || runErr != nil {
		b.Fatalf("Build: %v, %v\n%s", err, runErr, log.String())
	}
	b.StopTimer()
	b.ReportMetric(verifyTook.Seconds(), "s/verify-base")
	b.ReportMetric(median(kept).Seconds(), "s/export-kept")
	b.ReportMetric(median(all).Seconds(), "s/export-recompressed")
	b.Logf("kept %v (%d bytes compressed); recompressed %v (%d bytes compressed)", kept, keptSize, all, allSize)
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestVerifyBase reads the final base from layouts the gateway might
// find altered: a layer blob that does not match its digest, or is a
// symbolic link, fails; a config whose diff ID for a layer is not that
// layer's content ends the usable prefix there.
func TestVerifyBase(t *testing.T) {
	var ls []v1.Layer
	for _, mt := range []types.MediaType{types.DockerLayer, types.OCILayer, types.DockerLayer} {
		l, err := random.Layer(2000, mt)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	good, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := good.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	write := func(t *testing.T, img v1.Image) *builder.BaseImages {
		dir := t.TempDir()
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "reg.example/base:1"})); err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return &builder.BaseImages{Layout: dir, Final: &builder.BaseImage{Name: "reg.example/base:1", Digest: d.String()}}
	}
	blob := func(b *builder.BaseImages, i int) string {
		d, err := ls[i].Digest()
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(b.Layout, "blobs", "sha256", d.Hex)
	}

	t.Run("good", func(t *testing.T) {
		b := write(t, good)
		got, err := verifyBase(context.Background(), b)
		if err != nil || len(got) != 3 {
			t.Fatalf("verifyBase = %d layers, %v; want 3", len(got), err)
		}
		for i, l := range got {
			d, _ := ls[i].Digest()
			diff, _ := ls[i].DiffID()
			if l.desc.Digest != d || l.diffID != diff || l.desc.MediaType != types.DockerLayer {
				t.Errorf("layer %d = %s %s %s, want %s %s %s", i, l.desc.Digest, l.diffID, l.desc.MediaType, d, diff, types.DockerLayer)
			}
			rc, _ := ls[i].Uncompressed()
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			if l.raw != n {
				t.Errorf("layer %d raw size %d, want %d", i, l.raw, n)
			}
		}
	})
	t.Run("index", func(t *testing.T) {
		// A reference to an index: Final's digest is the index's, the
		// layout holds the platform's image under the reference.
		b := write(t, good)
		b.Final.Digest = "sha256:" + strings.Repeat("cd", 32)
		if got, err := verifyBase(context.Background(), b); err != nil || len(got) != 3 {
			t.Fatalf("verifyBase = %d layers, %v; want 3", len(got), err)
		}
	})
	t.Run("config lies", func(t *testing.T) {
		// good's layers, with a config and manifest of its own.
		b := write(t, good)
		cb, err := json.Marshal(cf)
		if err != nil {
			t.Fatal(err)
		}
		m, err := good.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		m = m.DeepCopy()
		m.Config.Digest, m.Config.Size, _ = v1.SHA256(bytes.NewReader(cb))
		mb, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		md, _, _ := v1.SHA256(bytes.NewReader(mb))
		for h, c := range map[v1.Hash][]byte{m.Config.Digest: cb, md: mb} {
			if err := os.WriteFile(filepath.Join(b.Layout, "blobs", "sha256", h.Hex), c, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b.Final.Digest = md.String()
		idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{MediaType: m.MediaType, Size: int64(len(mb)), Digest: md}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.Layout, "index.json"), idx, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := verifyBase(context.Background(), b)
		if err != nil || len(got) != 1 {
			t.Fatalf("verifyBase = %d layers, %v; want 1 (the prefix before the wrong diff ID)", len(got), err)
		}
	})
	t.Run("blob altered", func(t *testing.T) {
		b := write(t, good)
		p := blob(b, 1)
		c, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c[len(c)-1] ^= 0xff
		os.Remove(p)
		if err := os.WriteFile(p, c, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := verifyBase(context.Background(), b); err == nil {
			t.Fatalf("verifyBase with an altered blob = %d layers, want an error", len(got))
		}
	})
	t.Run("blob a symlink", func(t *testing.T) {
		b := write(t, good)
		p := blob(b, 0)
		tgt := filepath.Join(t.TempDir(), "blob")
		if err := os.Rename(p, tgt); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(tgt, p); err != nil {
			t.Fatal(err)
		}
		if _, err := verifyBase(context.Background(), b); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("verifyBase with a symlinked blob = %v, want a symbolic link error", err)
		}
	})
	t.Run("no final base", func(t *testing.T) {
		b := write(t, good)
		b.Final = nil
		if got, err := verifyBase(context.Background(), b); err != nil || len(got) != 0 {
			t.Fatalf("verifyBase without a final base = %d layers, %v; want none", len(got), err)
		}
	})
}

// TestBuildSizeCollision builds on a base whose last layer has the very
// uncompressed size of the layer the build adds, but other content (the
// same COPY's layer with one byte changed): Build takes the build's layer
// for the base's by its size, finds it is not, exports again compressing
// it, and gives a valid image with the base's layers kept.
func TestBuildSizeCollision(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.Registry(t)
	busybox := testenv.Busybox(t, reg)
	content := strings.Repeat("0123456789abcdef", 3*maxSmallEntry/16)
	files := map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY f /f\n", "f": content}

	// The COPY layer as Docker makes it.
	req := newRequest(t, reg, files, map[string]string{"BASE": busybox})
	var log strings.Builder
	first, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	ls, err := first.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[len(ls)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(raw), content)
	if i < 0 {
		t.Fatal("the COPY layer does not hold the file")
	}
	raw[i+len(content)/2] ^= 1
	altered, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
	if err != nil {
		t.Fatal(err)
	}
	bb, err := remote.Image(mustRef(t, busybox))
	if err != nil {
		t.Fatal(err)
	}
	baseImg, err := mutate.AppendLayers(bb, altered)
	if err != nil {
		t.Fatal(err)
	}
	base := reg + "/team/collide:1"
	if err := remote.Write(mustRef(t, base), baseImg); err != nil {
		t.Fatal(err)
	}

	req = newRequest(t, reg, files, map[string]string{"BASE": base})
	log.Reset()
	img, err := r.Build(context.Background(), req, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "exporting again") || !strings.Contains(log.String(), "2 of them the base's as they are") {
		t.Errorf("log does not show the second export keeping 2 base layers:\n%s", log.String())
	}
	got, want := layerDigests(t, img), layerDigests(t, baseImg)
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("layers %v, want the base's %v and one", got, want)
	}
	if f := imageFiles(t, roundTrip(t, img))["f"]; f != content {
		t.Errorf("image file f has %d bytes, not the context's", len(f))
	}
}

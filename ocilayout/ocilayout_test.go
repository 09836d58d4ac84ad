package ocilayout

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ggcrlayout "github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
)

// marker is the content of a host file that layouts link to; it must
// never show in an error.
const marker = "HOST-SECRET-3f1c"

// fixture is a layout of one random image in dir, and a host file outside
// it.
type fixture struct {
	dir     string
	img     v1.Image
	outside string // a root-only file holding marker
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "out")
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ggcrlayout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(base, "host-secret")
	if err := os.WriteFile(outside, []byte(marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, img: img, outside: outside}
}

func (f *fixture) blob(t *testing.T, h v1.Hash) string {
	return filepath.Join(f.dir, "blobs", h.Algorithm, h.Hex)
}

func (f *fixture) manifestDigest(t *testing.T) v1.Hash {
	t.Helper()
	d, err := f.img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fixture) layerDigest(t *testing.T) v1.Hash {
	t.Helper()
	ls, err := f.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// replace puts what make makes at p, in place of what was there.
func replace(t *testing.T, p string, make func(p string) error) {
	t.Helper()
	must(t, os.RemoveAll(p))
	must(t, make(p))
}

func symlinkTo(target string) func(string) error {
	return func(p string) error { return os.Symlink(target, p) }
}

func fifo(p string) error { return unix.Mkfifo(p, 0o644) }

// readLayers reads every layer of img whole, as a push does.
func readLayers(img v1.Image) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func TestImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// mangle changes the fixture's layout; nil leaves it valid.
		mangle func(t *testing.T, f *fixture)
		opts   []Option
		// want is in the error of Image, or of reading the layers when
		// lazy is set; "" means no error.
		want string
		lazy bool
	}{
		{name: "valid"},
		{
			name: "index symlink to /dev/zero",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, filepath.Join(f.dir, "index.json"), symlinkTo("/dev/zero"))
			},
			want: "index.json is a symbolic link",
		},
		{
			name: "index symlink to a root-only host file",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, filepath.Join(f.dir, "index.json"), symlinkTo(f.outside))
			},
			want: "index.json is a symbolic link",
		},
		{
			name: "index FIFO",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, filepath.Join(f.dir, "index.json"), fifo)
			},
			want: "index.json is a FIFO, not a regular file",
		},
		{
			name: "index character device",
			mangle: func(t *testing.T, f *fixture) {
				// /dev/zero's numbers.
				replace(t, filepath.Join(f.dir, "index.json"), func(p string) error {
					return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5)))
				})
			},
			want: "index.json is a character device, not a regular file",
		},
		{
			name: "index directory",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, filepath.Join(f.dir, "index.json"), func(p string) error { return os.Mkdir(p, 0o755) })
			},
			want: "index.json is a directory, not a regular file",
		},
		{
			name: "index oversize",
			mangle: func(t *testing.T, f *fixture) {
				must(t, os.WriteFile(filepath.Join(f.dir, "index.json"), bytes.Repeat([]byte(" "), MaxJSONBytes+1), 0o644))
			},
			want: "index.json is 8388609 bytes, more than the 8388608 allowed",
		},
		{
			name: "index hard link to a host file",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, filepath.Join(f.dir, "index.json"), func(p string) error { return os.Link(f.outside, p) })
			},
			want: "index.json: not valid JSON (at byte 1)",
		},
		{
			name: "index missing",
			mangle: func(t *testing.T, f *fixture) {
				must(t, os.Remove(filepath.Join(f.dir, "index.json")))
			},
			want: "index.json is missing",
		},
		{
			name: "index with two manifests",
			mangle: func(t *testing.T, f *fixture) {
				p, err := ggcrlayout.FromPath(f.dir)
				must(t, err)
				img, err := random.Image(10, 1)
				must(t, err)
				must(t, p.AppendImage(img))
			},
			want: "index.json lists 2 manifests, want 1",
		},
		{
			name: "manifest digest naming a path",
			mangle: func(t *testing.T, f *fixture) {
				writeIndex(t, f, `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,"digest":"sha256:../../host-secret"}]}`)
			},
			want: "index.json: not a valid OCI document",
		},
		{
			name: "manifest digest of another algorithm",
			mangle: func(t *testing.T, f *fixture) {
				writeIndex(t, f, `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,"digest":"sha512:`+strings.Repeat("a", 128)+`"}]}`)
			},
			want: "index.json: not a valid OCI document",
		},
		{
			name: "index pointing at an index",
			mangle: func(t *testing.T, f *fixture) {
				writeIndex(t, f, `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","size":10,"digest":"sha256:`+strings.Repeat("a", 64)+`"}]}`)
			},
			want: "want an image manifest",
		},
		{
			name: "manifest size beyond bound",
			mangle: func(t *testing.T, f *fixture) {
				writeIndex(t, f, `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1099511627776,"digest":"sha256:`+strings.Repeat("a", 64)+`"}]}`)
			},
			want: "size 1099511627776 out of range",
		},
		{
			name: "manifest wrong digest",
			mangle: func(t *testing.T, f *fixture) {
				p := f.blob(t, f.manifestDigest(t))
				b, err := os.ReadFile(p)
				must(t, err)
				b[len(b)-1] = ' '
				must(t, os.WriteFile(p, b, 0o644))
			},
			want: "does not match its digest",
		},
		{
			name: "manifest symlink to /dev/zero",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, f.blob(t, f.manifestDigest(t)), symlinkTo("/dev/zero"))
			},
			want: "is a symbolic link",
		},
		{
			name: "blobs directory a symlink out of the layout",
			mangle: func(t *testing.T, f *fixture) {
				moved := filepath.Join(filepath.Dir(f.dir), "moved-blobs")
				must(t, os.Rename(filepath.Join(f.dir, "blobs"), moved))
				must(t, os.Symlink(moved, filepath.Join(f.dir, "blobs")))
			},
			want: "is a symbolic link, or is reached through one",
		},
		{
			name: "config FIFO",
			mangle: func(t *testing.T, f *fixture) {
				h, err := f.img.ConfigName()
				must(t, err)
				replace(t, f.blob(t, h), fifo)
			},
			want: "is a FIFO, not a regular file",
		},
		{
			name: "layer symlink to /dev/zero",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, f.blob(t, f.layerDigest(t)), symlinkTo("/dev/zero"))
			},
			want: "is a symbolic link",
		},
		{
			name: "layer FIFO",
			mangle: func(t *testing.T, f *fixture) {
				replace(t, f.blob(t, f.layerDigest(t)), fifo)
			},
			want: "is a FIFO, not a regular file",
		},
		{
			name: "layer missing",
			mangle: func(t *testing.T, f *fixture) {
				must(t, os.Remove(f.blob(t, f.layerDigest(t))))
			},
			want: "is missing",
		},
		{
			name: "layer of the wrong size",
			mangle: func(t *testing.T, f *fixture) {
				must(t, os.Truncate(f.blob(t, f.layerDigest(t)), 3))
			},
			want: "is 3 bytes, its descriptor says",
		},
		{
			name: "layer wrong digest",
			mangle: func(t *testing.T, f *fixture) {
				p := f.blob(t, f.layerDigest(t))
				b, err := os.ReadFile(p)
				must(t, err)
				b[0] ^= 0xff
				must(t, os.WriteFile(p, b, 0o644))
			},
			want: "does not match its digest",
			lazy: true,
		},
		{
			name: "layer hard link to a host file of its size",
			mangle: func(t *testing.T, f *fixture) {
				p := f.blob(t, f.layerDigest(t))
				fi, err := os.Stat(p)
				must(t, err)
				body := []byte(marker + strings.Repeat("x", int(fi.Size())-len(marker)))
				must(t, os.WriteFile(f.outside, body, 0o600))
				replace(t, p, func(p string) error { return os.Link(f.outside, p) })
			},
			want: "does not match its digest",
			lazy: true,
		},
		{
			name: "layer over the blob bound",
			opts: []Option{WithMaxBlobBytes(100)},
			want: "out of range (at most 100)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.mangle != nil {
				tc.mangle(t, f)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(10*time.Second))
			defer cancel()
			img, err := Image(ctx, f.dir, tc.opts...)
			if err == nil && tc.lazy {
				err = readLayers(img)
			}
			if err != nil && strings.Contains(err.Error(), marker) {
				t.Errorf("Image(%s) = %v, which quotes the host file", tc.name, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("Image(%s) took longer than 10s", tc.name)
			}
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Image(%s) = %v, want an error containing %q", tc.name, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Image(%s) = %v", tc.name, err)
			}
			want, _ := f.img.Digest()
			if got, err := img.Digest(); err != nil || got != want {
				t.Errorf("Image(%s).Digest() = %v, %v; want %v", tc.name, got, err, want)
			}
			if err := readLayers(img); err != nil {
				t.Errorf("reading the layers of Image(%s): %v", tc.name, err)
			}
			rc := mutate.Extract(img)
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				t.Errorf("extracting Image(%s): %v", tc.name, err)
			}
		})
	}
}

func writeIndex(t *testing.T, f *fixture, s string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(f.dir, "index.json"), []byte(s), 0o644))
}

// TestOpenBeneath: the opener itself refuses names that leave the root,
// whatever a future caller passes it.
func TestOpenBeneath(t *testing.T) {
	f := newFixture(t)
	fd, err := unix.Open(f.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	l := &layout{root: os.NewFile(uintptr(fd), f.dir)}
	defer l.root.Close()
	must(t, os.Mkdir(filepath.Join(f.dir, "sub"), 0o755))
	must(t, os.Symlink("/proc/self/root/etc/passwd", filepath.Join(f.dir, "magic")))
	for _, tc := range []struct{ name, want string }{
		{"../host-secret", "leads out of its directory"},
		{f.outside, "leads out of its directory"},
		{"/etc/passwd", "leads out of its directory"},
		{"sub/../../host-secret", "leads out of its directory"},
		{"magic", "is a symbolic link"},
		{"sub", "is a directory"},
		{"index.json", ""},
	} {
		file, err := l.open(tc.name, MaxJSONBytes)
		if tc.want == "" {
			if err != nil {
				t.Errorf("open(%q) = %v, want it opened", tc.name, err)
			} else {
				file.Close()
			}
			continue
		}
		if err == nil {
			file.Close()
			t.Errorf("open(%q) succeeded, want an error containing %q", tc.name, tc.want)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("open(%q) = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestImageCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Image(ctx, f.dir); !errors.Is(err, context.Canceled) {
		t.Errorf("Image(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
}

func TestImageRootSymlink(t *testing.T) {
	f := newFixture(t)
	link := filepath.Join(t.TempDir(), "link")
	must(t, os.Symlink(f.dir, link))
	if _, err := Image(context.Background(), link); err == nil {
		t.Errorf("Image(%q) through a symbolic link succeeded, want an error", link)
	}
}

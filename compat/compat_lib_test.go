package compat

import (
	"archive/tar"
	"bytes"
	"io"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type file struct {
	hdr  tar.Header
	body string
}

func layer(t *testing.T, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, f.body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t *testing.T, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestFlattenAppliesWhiteoutsAndKeepsMetadata(t *testing.T) {
	img := image(t, v1.Config{},
		layer(t,
			file{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
			file{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
			file{hdr: tar.Header{Name: "etc/gone", Mode: 0o644}, body: "x"},
			file{hdr: tar.Header{Name: "etc/old/", Typeflag: tar.TypeDir, Mode: 0o755}},
			file{hdr: tar.Header{Name: "etc/old/a", Mode: 0o644}, body: "a"},
			file{hdr: tar.Header{Name: "bin/su", Mode: 0o4755, Uid: 0, Gid: 0}, body: "su"},
		),
		layer(t,
			file{hdr: tar.Header{Name: "etc/.wh.gone", Mode: 0o644}},
			file{hdr: tar.Header{Name: "etc/old/.wh..wh..opq", Mode: 0o644}},
			file{hdr: tar.Header{Name: "etc/old/b", Mode: 0o600, Uid: 491327, Gid: 89939}, body: "bee"},
			file{hdr: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
			file{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "etc/old/b", Mode: 0o777}},
			file{hdr: tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "./bin/su"}},
			file{hdr: tar.Header{Name: "cap", Mode: 0o755, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00", "comment": "not an xattr"}}, body: "c"},
		),
	)
	fs, err := Flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/etc/gone", "/etc/old/a", "/etc/.wh.gone", "/etc/old/.wh..wh..opq"} {
		if e, ok := fs[p]; ok {
			t.Errorf("Flatten has %s = %+v, want it absent", p, e)
		}
	}
	want := map[string]Entry{
		"/bin/su":    {Path: "/bin/su", Type: "file", Mode: 0o4755, Size: 2, SHA256: "9d3e06f4a8f1bb6e3be2a8b4bb0c4a3f40b5a4a6f5df2a8a3d7a4c2bb30bd8f8"},
		"/etc/old/b": {Path: "/etc/old/b", Type: "file", Mode: 0o600, UID: 491327, GID: 89939, Size: 3},
		"/tmp":       {Path: "/tmp", Type: "dir", Mode: 0o1777},
		"/link":      {Path: "/link", Type: "symlink", Mode: 0o777, Link: "etc/old/b"},
		"/hard":      {Path: "/hard", Type: "hardlink", Link: "/bin/su"},
		"/cap":       {Path: "/cap", Type: "file", Mode: 0o755, Size: 1, Xattrs: map[string]string{"security.capability": "\x01\x00"}},
	}
	for p, w := range want {
		got, ok := fs[p]
		if !ok {
			t.Errorf("Flatten lacks %s", p)
			continue
		}
		if w.Type == "file" {
			if len(got.SHA256) != 64 {
				t.Errorf("%s: sha256 = %q, want 64 hex digits", p, got.SHA256)
			}
			got.SHA256, w.SHA256 = "", ""
		}
		if got.Path != w.Path || got.Type != w.Type || got.Mode != w.Mode || got.UID != w.UID || got.GID != w.GID || got.Size != w.Size || got.Link != w.Link || !equalMaps(got.Xattrs, w.Xattrs) {
			t.Errorf("Flatten %s = %+v, want %+v", p, got, w)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestCompare(t *testing.T) {
	base := []file{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/x", Mode: 0o700}, body: "same"},
		{hdr: tar.Header{Name: "etc/owned", Mode: 0o644, Uid: 1, Gid: 1}, body: "o"},
		{hdr: tar.Header{Name: "etc/body", Mode: 0o644}, body: "one"},
		{hdr: tar.Header{Name: "etc/l", Typeflag: tar.TypeSymlink, Linkname: "x", Mode: 0o777}},
		{hdr: tar.Header{Name: "only-a", Mode: 0o644}, body: "a"},
		{hdr: tar.Header{Name: "kind", Mode: 0o644}, body: ""},
	}
	other := []file{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/x", Mode: 0o755, ModTime: tar.Header{}.ModTime.AddDate(5, 0, 0)}, body: "same"},
		{hdr: tar.Header{Name: "etc/owned", Mode: 0o644, Uid: 1, Gid: 2}, body: "o"},
		{hdr: tar.Header{Name: "etc/body", Mode: 0o644}, body: "two"},
		{hdr: tar.Header{Name: "etc/l", Typeflag: tar.TypeSymlink, Linkname: "/etc/x", Mode: 0o755}},
		{hdr: tar.Header{Name: "only-b", Mode: 0o644}, body: "b"},
		{hdr: tar.Header{Name: "kind", Typeflag: tar.TypeDir, Mode: 0o644}},
	}
	a := image(t, v1.Config{Env: []string{"PATH=/bin"}, User: "", Cmd: []string{"sh"}, Labels: map[string]string{}, ExposedPorts: map[string]struct{}{"80/tcp": {}}}, layer(t, base...))
	b := image(t, v1.Config{Env: []string{"PATH=/bin"}, User: "nobody", Cmd: []string{"sh"}, ExposedPorts: map[string]struct{}{"80/tcp": {}, "81/tcp": {}}, OnBuild: []string{"RUN true"}}, layer(t, other...))

	ds, err := Compare(a, b)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.String())
	}
	want := []string{
		`config User: "" vs "nobody"`,
		`config ExposedPorts: ["80/tcp"] vs ["80/tcp" "81/tcp"]`,
		`config OnBuild: [] vs ["RUN true"]`,
		`/etc/body: content 3 bytes 7692c3ad3540 vs 3 bytes 3fc4ccfe7458`,
		`/etc/l: link x vs /etc/x`,
		`/etc/owned: owner 1:1 vs 1:2`,
		`/etc/x: mode 0700 vs 0755`,
		`/kind: type file vs dir`,
		`/only-a: missing`,
		`/only-b: extra`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("Compare =\n%s\nwant\n%s", join(got), join(want))
	}

	if ds, err := Compare(a, a); err != nil || len(ds) != 0 {
		t.Errorf("Compare(a, a) = %v, %v, want no differences", ds, err)
	}
}

func join(s []string) string {
	var b bytes.Buffer
	for _, l := range s {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// Empty runtime mount points are what some builders leave and others do
// not: not a difference. Anything in them, or any other empty directory,
// is.
func TestCompareRuntimeMounts(t *testing.T) {
	a := FS{
		"/proc":      {Path: "/proc", Type: "dir", Mode: 0o555},
		"/etc/hosts": {Path: "/etc/hosts", Type: "file", Mode: 0o644},
		"/dev":       {Path: "/dev", Type: "dir", Mode: 0o755},
		"/dev/null":  {Path: "/dev/null", Type: "file", Size: 1},
		"/empty":     {Path: "/empty", Type: "dir", Mode: 0o755},
	}
	var got []string
	for _, d := range CompareFS(a, FS{}) {
		got = append(got, d.String())
	}
	want := []string{"/dev: missing", "/dev/null: missing", "/empty: missing"}
	if !slices.Equal(got, want) {
		t.Errorf("CompareFS = %q, want %q", got, want)
	}
	if ds := CompareConfig(v1.Config{WorkingDir: "/"}, v1.Config{}); len(ds) != 0 {
		t.Errorf("CompareConfig(WorkingDir / vs empty) = %v, want none", ds)
	}
}

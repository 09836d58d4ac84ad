// Package compat compares container images built from the same Dockerfile
// by different builders: Flatten turns an image into its final file
// system (whiteouts applied, timestamps dropped), and Compare lists what
// differs in the runtime config and in the file system, readably. It is
// the library of the differential fidelity test (compat_test.go), which
// builds a corpus of Dockerfiles with BuildKit as the reference.
package compat

import (
	"archive/tar"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Entry is one file of a flattened image. Timestamps are left out: no
// two builders agree on them.
type Entry struct {
	Path   string // absolute, cleaned: "/etc/passwd"
	Type   string // "file", "dir", "symlink", "hardlink", "char", "block", "fifo"
	Mode   int64  // permission bits with setuid, setgid and sticky (07777)
	UID    int
	GID    int
	Size   int64  // regular files only
	SHA256 string // of the content, regular files only
	Link   string // symlink or hard link target
	Xattrs map[string]string
}

// FS is a flattened file system by path.
type FS map[string]Entry

const xattrPrefix = "SCHILY.xattr."

// Flatten reads img's file system as a container would see it: layer by
// layer from the top, applying whiteouts (".wh.name") and opaque
// directories (".wh..wh..opq", which mutate.Extract does not know).
func Flatten(img v1.Image) (FS, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	f := flattener{fs: FS{}, deleted: map[string]bool{}, opaque: map[string]bool{}}
	for i := len(layers) - 1; i >= 0; i-- {
		rc, err := layers[i].Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", i, err)
		}
		err = f.layer(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", i, err)
		}
	}
	return f.fs, nil
}

// flattener gathers layers from the topmost down: what an upper layer has,
// deletes or makes opaque hides the same path in the layers below.
type flattener struct {
	fs      FS
	deleted map[string]bool // whited out by an upper layer
	opaque  map[string]bool // directories whose lower contents are hidden
}

func (f *flattener) hidden(p string) bool {
	if _, ok := f.fs[p]; ok || f.deleted[p] {
		return true
	}
	for a := path.Dir(p); ; a = path.Dir(a) {
		if f.deleted[a] || f.opaque[a] {
			return true
		}
		if e, ok := f.fs[a]; ok && e.Type != "dir" {
			return true
		}
		if a == "/" {
			return false
		}
	}
}

func (f *flattener) layer(r io.Reader) error {
	deleted, opaque := map[string]bool{}, map[string]bool{}
	err := readTar(r, func(e Entry) {
		dir, base := path.Split(e.Path)
		switch {
		case base == ".wh..wh..opq":
			opaque[path.Clean(dir)] = true
		case strings.HasPrefix(base, ".wh."):
			deleted[path.Join(dir, base[len(".wh."):])] = true
		case !f.hidden(e.Path):
			f.fs[e.Path] = e
		}
	})
	maps.Copy(f.deleted, deleted)
	maps.Copy(f.opaque, opaque)
	return err
}

// readTar calls add with every entry of a tar stream but the root, which
// not every builder writes (its mode is the runtime's anyway).
func readTar(r io.Reader, add func(Entry)) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading a tar stream: %w", err)
		}
		p := cleanPath(h.Name)
		if p == "/" {
			continue
		}
		e := Entry{Path: p, Type: typeName(h.Typeflag), Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			sum := sha256.New()
			n, err := io.Copy(sum, tr)
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(sum.Sum(nil))
		case tar.TypeSymlink:
			e.Link = h.Linkname
		case tar.TypeLink:
			e.Link = cleanPath(h.Linkname)
		}
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, xattrPrefix); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[name] = v
			}
		}
		add(e)
	}
}

func cleanPath(name string) string {
	return path.Clean("/" + strings.TrimPrefix(name, "./"))
}

func typeName(f byte) string {
	switch f {
	case tar.TypeReg, tar.TypeRegA:
		return "file"
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "char"
	case tar.TypeBlock:
		return "block"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type %q", f)
}

// Diff is one difference between image A and image B.
type Diff struct {
	// Path is the file ("/etc/x") or "config <Field>".
	Path string
	// What differs: "missing", "extra", "type", "mode", "owner", "content",
	// "link", "xattrs", or "" for a config field.
	What string
	A, B string
}

// String reads "/etc/x: mode 0700 vs 0755", "/a: missing" (in B),
// "/b: extra" (only in B), or "config User: "" vs "nobody"".
func (d Diff) String() string {
	switch d.What {
	case "missing", "extra":
		return d.Path + ": " + d.What
	case "":
		return d.Path + ": " + d.A + " vs " + d.B
	}
	return d.Path + ": " + d.What + " " + d.A + " vs " + d.B
}

// Compare returns what differs between images a (the reference) and b:
// config fields first, then files in path order.
func Compare(a, b v1.Image) ([]Diff, error) {
	ca, err := a.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config of image A: %w", err)
	}
	cb, err := b.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config of image B: %w", err)
	}
	fa, err := Flatten(a)
	if err != nil {
		return nil, fmt.Errorf("flattening image A: %w", err)
	}
	fb, err := Flatten(b)
	if err != nil {
		return nil, fmt.Errorf("flattening image B: %w", err)
	}
	return append(CompareConfig(ca.Config, cb.Config), CompareFS(fa, fb)...), nil
}

// CompareConfig compares the fields of the runtime config that a
// Dockerfile sets. A nil and an empty list or map are the same.
func CompareConfig(a, b v1.Config) []Diff {
	var ds []Diff
	add := func(field string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			ds = append(ds, Diff{Path: "config " + field, A: show(x), B: show(y)})
		}
	}
	add("Env", nilIfEmpty(a.Env), nilIfEmpty(b.Env))
	add("Cmd", nilIfEmpty(a.Cmd), nilIfEmpty(b.Cmd))
	add("Entrypoint", nilIfEmpty(a.Entrypoint), nilIfEmpty(b.Entrypoint))
	// An empty WorkingDir runs in "/", which BuildKit writes out.
	add("WorkingDir", cmp.Or(a.WorkingDir, "/"), cmp.Or(b.WorkingDir, "/"))
	add("User", a.User, b.User)
	add("ExposedPorts", keys(a.ExposedPorts), keys(b.ExposedPorts))
	add("Volumes", keys(a.Volumes), keys(b.Volumes))
	add("Labels", nilIfEmptyMap(a.Labels), nilIfEmptyMap(b.Labels))
	add("StopSignal", a.StopSignal, b.StopSignal)
	add("Healthcheck", a.Healthcheck, b.Healthcheck)
	add("Shell", nilIfEmpty(a.Shell), nilIfEmpty(b.Shell))
	add("OnBuild", nilIfEmpty(a.OnBuild), nilIfEmpty(b.OnBuild))
	return ds
}

// CompareFS compares two flattened file systems entry by entry.
func CompareFS(a, b FS) []Diff {
	var ds []Diff
	paths := slices.Sorted(maps.Keys(a))
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	for _, p := range paths {
		x, inA := a[p]
		y, inB := b[p]
		switch {
		case !inB && !(runtimeMount(p) && isEmpty(a, x)):
			ds = append(ds, Diff{Path: p, What: "missing"})
			continue
		case !inA && !(runtimeMount(p) && isEmpty(b, y)):
			ds = append(ds, Diff{Path: p, What: "extra"})
			continue
		case !inA || !inB:
			continue
		}
		if x.Type != y.Type {
			ds = append(ds, Diff{Path: p, What: "type", A: x.Type, B: y.Type})
			continue
		}
		// A symlink's mode means nothing on Linux, and builders disagree.
		if x.Mode != y.Mode && x.Type != "symlink" {
			ds = append(ds, Diff{Path: p, What: "mode", A: fmt.Sprintf("%04o", x.Mode), B: fmt.Sprintf("%04o", y.Mode)})
		}
		if x.UID != y.UID || x.GID != y.GID {
			ds = append(ds, Diff{Path: p, What: "owner", A: fmt.Sprintf("%d:%d", x.UID, x.GID), B: fmt.Sprintf("%d:%d", y.UID, y.GID)})
		}
		if x.SHA256 != y.SHA256 {
			ds = append(ds, Diff{Path: p, What: "content", A: fmt.Sprintf("%d bytes %.12s", x.Size, x.SHA256), B: fmt.Sprintf("%d bytes %.12s", y.Size, y.SHA256)})
		}
		if x.Link != y.Link {
			ds = append(ds, Diff{Path: p, What: "link", A: x.Link, B: y.Link})
		}
		if !maps.Equal(x.Xattrs, y.Xattrs) {
			ds = append(ds, Diff{Path: p, What: "xattrs", A: show(x.Xattrs), B: show(y.Xattrs)})
		}
	}
	return ds
}

// runtimeMount reports whether the runtime mounts something over p in
// every container: builders leave the empty mount points their RUN steps
// had (BuildKit keeps /dev, /proc and /sys; Docker the /etc files) or not.
func runtimeMount(p string) bool {
	switch p {
	case "/dev", "/proc", "/sys", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf":
		return true
	}
	return false
}

// isEmpty reports whether e is an empty file or a directory with nothing in
// it in fs.
func isEmpty(fs FS, e Entry) bool {
	switch e.Type {
	case "file":
		return e.Size == 0
	case "dir":
		for p := range fs {
			if strings.HasPrefix(p, e.Path+"/") {
				return false
			}
		}
		return true
	}
	return false
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func nilIfEmptyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func keys(m map[string]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []string:
		if v == nil {
			return "[]"
		}
		return fmt.Sprintf("%q", v)
	case map[string]string:
		if len(v) == 0 {
			return "{}"
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(v)) {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v[k]))
		}
		return "{" + strings.Join(parts, " ") + "}"
	case *v1.HealthConfig:
		if v == nil {
			return "none"
		}
		return fmt.Sprintf("%+v", *v)
	}
	return fmt.Sprint(v)
}

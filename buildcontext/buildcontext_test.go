package buildcontext

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
)

// mkTree creates files under a new temp dir. A key ending in "/" is an
// empty dir; a value starting with "-> " makes a symlink to the rest.
func mkTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type entry struct {
	hdr  *tar.Header
	body string
}

// readTar reads a tar stream, gunzipping it first if it is gzip'd.
func readTar(t *testing.T, r io.Reader) []entry {
	t.Helper()
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			t.Fatalf("gzip.NewReader: %v", err)
		}
		r = zr
	} else {
		r = br
	}
	var out []entry
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		out = append(out, entry{hdr, string(body)})
	}
}

func names(entries []entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.hdr.Name)
	}
	return out
}

// writeTar runs Write and reads its output back.
func writeTar(t *testing.T, dir string, opts ...Option) []entry {
	t.Helper()
	var buf bytes.Buffer
	n, err := Write(context.Background(), &buf, dir, opts...)
	if err != nil {
		t.Fatalf("Write(%q) = %v, want nil", dir, err)
	}
	entries := readTar(t, &buf)
	if want := countFiles(entries); n != want {
		t.Errorf("Write(%q) = %d, want %d (non-directory entries in archive)", dir, n, want)
	}
	return entries
}

func countFiles(entries []entry) int {
	n := 0
	for _, e := range entries {
		if e.hdr.Typeflag != tar.TypeDir {
			n++
		}
	}
	return n
}

func TestIgnore(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		opts  []Option
		want  []string
	}{{
		name:  "no ignore file",
		files: map[string]string{"Dockerfile": "FROM scratch", "a.txt": "a", "sub/b.txt": "b", "empty/": ""},
		want:  []string{"Dockerfile", "a.txt", "empty/", "sub/", "sub/b.txt"},
	}, {
		name: "excludes files and dirs",
		files: map[string]string{
			".dockerignore": "*.log\nbuild\n",
			"Dockerfile":    "FROM scratch",
			"a.txt":         "a",
			"a.log":         "log",
			"build/out":     "bin",
			"build/x/y":     "y",
			"src/main.go":   "package main",
			// "*.log" is anchored at the root, as in Docker.
			"src/debug.log": "log",
		},
		want: []string{".dockerignore", "Dockerfile", "a.txt", "src/", "src/debug.log", "src/main.go"},
	}, {
		name: "exception inside excluded dir",
		files: map[string]string{
			".dockerignore":   "vendor\n!vendor/keep.txt\n",
			"Dockerfile":      "",
			"vendor/a":        "a",
			"vendor/keep.txt": "k",
			"vendor/sub/b":    "b",
		},
		want: []string{".dockerignore", "Dockerfile", "vendor/", "vendor/keep.txt"},
	}, {
		name: "exception re-includes a whole subdir",
		files: map[string]string{
			".dockerignore": "docs\n!docs/api\n",
			"Dockerfile":    "",
			"docs/readme":   "r",
			"docs/api/x/y":  "y",
		},
		want: []string{".dockerignore", "Dockerfile", "docs/", "docs/api/", "docs/api/x/", "docs/api/x/y"},
	}, {
		name: "later pattern wins",
		files: map[string]string{
			".dockerignore": "*.txt\n!important.txt\nimportant.txt\n!keep.txt\n",
			"Dockerfile":    "",
			"a.txt":         "",
			"important.txt": "",
			"keep.txt":      "",
		},
		want: []string{".dockerignore", "Dockerfile", "keep.txt"},
	}, {
		name: "double star",
		files: map[string]string{
			".dockerignore": "**/*.log\nnode_modules/**\n",
			"Dockerfile":    "",
			"a.log":         "",
			"x/b.log":       "",
			"x/y/c.log":     "",
			"x/y/c.txt":     "",
			// "dir/**" excludes the contents, not the dir itself.
			"node_modules/m/index.js": "",
		},
		want: []string{".dockerignore", "Dockerfile", "node_modules/", "x/", "x/y/", "x/y/c.txt"},
	}, {
		name: "double star exception reaches into excluded dir",
		files: map[string]string{
			".dockerignore":   "cache\n!**/keep\n",
			"Dockerfile":      "",
			"cache/a":         "",
			"cache/deep/keep": "",
			"cache/deep/b":    "",
		},
		want: []string{".dockerignore", "Dockerfile", "cache/", "cache/deep/", "cache/deep/keep"},
	}, {
		name: "comments and blank lines",
		files: map[string]string{
			// Only a "#" in column 0 starts a comment; leading "/" and
			// surrounding blanks are dropped, as in Docker.
			".dockerignore": "# a.txt\n\n   \n\t/b.txt  \n  #c\n",
			"Dockerfile":    "",
			"a.txt":         "",
			"b.txt":         "",
			"#c":            "",
		},
		want: []string{".dockerignore", "Dockerfile", "a.txt"},
	}, {
		name: "Dockerfile and .dockerignore always sent",
		files: map[string]string{
			".dockerignore": "*\n",
			"Dockerfile":    "",
			"a.txt":         "",
			"sub/b":         "",
		},
		want: []string{".dockerignore", "Dockerfile"},
	}, {
		name: "custom Dockerfile in excluded dir",
		files: map[string]string{
			".dockerignore":        "build\n.dockerignore\n",
			"build/app.Dockerfile": "",
			"build/other":          "",
			"Dockerfile":           "",
		},
		opts: []Option{WithDockerfile("build/app.Dockerfile")},
		want: []string{".dockerignore", "Dockerfile", "build/", "build/app.Dockerfile"},
	}, {
		name: "Dockerfile-specific ignore file takes precedence",
		files: map[string]string{
			".dockerignore":           "a.txt\n",
			"Dockerfile.dockerignore": "b.txt\n",
			"Dockerfile":              "",
			"a.txt":                   "",
			"b.txt":                   "",
		},
		want: []string{".dockerignore", "Dockerfile", "Dockerfile.dockerignore", "a.txt"},
	}, {
		name: "ignore file of custom Dockerfile",
		files: map[string]string{
			".dockerignore":                  "*.md\n",
			"ci/app.Dockerfile":              "",
			"ci/app.Dockerfile.dockerignore": "*\n",
			"ci/other.Dockerfile":            "",
			"README.md":                      "",
			"main.go":                        "",
		},
		opts: []Option{WithDockerfile("ci/app.Dockerfile")},
		want: []string{".dockerignore", "ci/", "ci/app.Dockerfile", "ci/app.Dockerfile.dockerignore"},
	}, {
		name: "slash Dockerfile path is cleaned",
		files: map[string]string{
			".dockerignore": "*\n",
			"a/Dockerfile":  "",
		},
		opts: []Option{WithDockerfile("./a//Dockerfile")},
		want: []string{".dockerignore", "a/", "a/Dockerfile"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := mkTree(t, tt.files)
			got := names(writeTar(t, dir, tt.opts...))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Write(%q) = %q, want %q", dir, got, tt.want)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	dir := mkTree(t, map[string]string{
		"Dockerfile":   "FROM scratch\n",
		"bin/run.sh":   "#!/bin/sh\n",
		"link":         "-> bin/run.sh",
		"abs":          "-> /etc/passwd",
		"dangling":     "-> does/not/exist",
		"dirlink":      "-> bin",
		"bin/hardlink": "", // replaced below
	})
	run := filepath.Join(dir, "bin", "run.sh")
	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "bin", "hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(run, filepath.Join(dir, "bin", "hardlink")); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := os.Chtimes(run, mtime, mtime); err != nil {
		t.Fatal(err)
	}

	type want struct {
		typ  byte
		mode int64
		link string
		body string
	}
	wants := map[string]want{
		"Dockerfile":   {tar.TypeReg, 0o644, "", "FROM scratch\n"},
		"abs":          {tar.TypeSymlink, 0o777, "/etc/passwd", ""},
		"bin/":         {tar.TypeDir, 0o755, "", ""},
		"bin/hardlink": {tar.TypeReg, 0o755, "", "#!/bin/sh\n"},
		"bin/run.sh":   {tar.TypeReg, 0o755, "", "#!/bin/sh\n"},
		"dangling":     {tar.TypeSymlink, 0o777, "does/not/exist", ""},
		// Not followed: no dirlink/run.sh.
		"dirlink": {tar.TypeSymlink, 0o777, "bin", ""},
		"link":    {tar.TypeSymlink, 0o777, "bin/run.sh", ""},
	}

	entries := writeTar(t, dir)
	wantNames := slices.Sorted(func(yield func(string) bool) {
		for k := range wants {
			if !yield(k) {
				return
			}
		}
	})
	if got := names(entries); !slices.Equal(got, wantNames) {
		t.Fatalf("Write(%q) = %q, want %q", dir, got, wantNames)
	}
	for _, e := range entries {
		h, w := e.hdr, wants[e.hdr.Name]
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link || e.body != w.body {
			t.Errorf("Write(%q) entry %s = {type %c mode %o link %q body %q}, want {type %c mode %o link %q body %q}",
				dir, h.Name, h.Typeflag, h.Mode, h.Linkname, e.body, w.typ, w.mode, w.link, w.body)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("Write(%q) entry %s owner = %d:%d (%q:%q), want 0:0 with no names", dir, h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if h.Name == "bin/run.sh" && !h.ModTime.Equal(mtime.Truncate(time.Second)) {
			t.Errorf("Write(%q) entry %s mtime = %v, want %v", dir, h.Name, h.ModTime, mtime.Truncate(time.Second))
		}
	}
}

func TestDeterministic(t *testing.T) {
	dir := mkTree(t, map[string]string{
		"Dockerfile": "", "b": "b", "a/z": "z", "a/y": "y", "a.txt": "", "c/": "",
	})
	var first, second bytes.Buffer
	for _, buf := range []*bytes.Buffer{&first, &second} {
		if _, err := Write(context.Background(), buf, dir); err != nil {
			t.Fatalf("Write(%q) = %v, want nil", dir, err)
		}
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Errorf("Write(%q) twice gave different bytes", dir)
	}
}

func TestCompression(t *testing.T) {
	dir := mkTree(t, map[string]string{"Dockerfile": "FROM scratch", "a/b": strings.Repeat("x", 100_000)})
	want := []string{"Dockerfile", "a/", "a/b"}
	tests := []struct {
		name     string
		opts     []Option
		wantGzip bool
	}{
		{"default", nil, true},
		{"best", []Option{WithCompression(gzip.BestCompression)}, true},
		{"none", []Option{WithCompression(gzip.NoCompression)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if _, err := Write(context.Background(), &buf, dir, tt.opts...); err != nil {
				t.Fatalf("Write(%q) = %v, want nil", dir, err)
			}
			if gotGzip := bytes.HasPrefix(buf.Bytes(), []byte{0x1f, 0x8b}); gotGzip != tt.wantGzip {
				t.Errorf("Write(%q) gzip'd = %v, want %v", dir, gotGzip, tt.wantGzip)
			}
			var r io.Reader = &buf
			if tt.wantGzip {
				zr, err := gzip.NewReader(r)
				if err != nil {
					t.Fatalf("gzip.NewReader: %v", err)
				}
				r = zr
			}
			// Plain archive/tar, no sniffing: the format is what's promised.
			var got []string
			tr := tar.NewReader(r)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("tar.Next: %v", err)
				}
				got = append(got, h.Name)
			}
			if !slices.Equal(got, want) {
				t.Errorf("Write(%q) = %q, want %q", dir, got, want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := mkTree(t, map[string]string{"Dockerfile": "", "sub/": "", "file": ""})
	tests := []struct {
		name string
		dir  string
		opts []Option
		want string // substring of the error
	}{
		{"missing dir", filepath.Join(dir, "nope"), nil, "no such file or directory"},
		{"dir is a file", filepath.Join(dir, "file"), nil, "is not a directory"},
		{"missing Dockerfile", filepath.Join(dir, "sub"), nil, `Dockerfile "Dockerfile" not found in context ` + filepath.Join(dir, "sub")},
		{"missing custom Dockerfile", dir, []Option{WithDockerfile("ci/Dockerfile")}, `Dockerfile "ci/Dockerfile" not found in context ` + dir},
		{"Dockerfile below a file", dir, []Option{WithDockerfile("file/Dockerfile")}, `not found in context`},
		{"Dockerfile is a dir", dir, []Option{WithDockerfile("sub")}, "is a directory"},
		{"Dockerfile outside context", dir, []Option{WithDockerfile("../Dockerfile")}, "must be a path inside the context"},
		{"absolute Dockerfile", dir, []Option{WithDockerfile(filepath.Join(dir, "Dockerfile"))}, "must be a path inside the context"},
		{"bad compression level", dir, []Option{WithCompression(42)}, "invalid compression level 42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Write(context.Background(), io.Discard, tt.dir, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Write(%q) = %d, %v, want error containing %q", tt.dir, n, err, tt.want)
			}
		})
	}
}

func TestBadIgnoreFile(t *testing.T) {
	dir := mkTree(t, map[string]string{"Dockerfile": "", ".dockerignore": "!\n"})
	if _, err := Write(context.Background(), io.Discard, dir); err == nil || !strings.Contains(err.Error(), "parsing ignore patterns") {
		t.Errorf("Write(%q) = %v, want error about ignore patterns", dir, err)
	}
	if _, _, err := Size(dir); err == nil {
		t.Errorf("Size(%q) = nil error, want error about ignore patterns", dir)
	}
}

// cancelWriter cancels its context on the first write.
type cancelWriter struct{ cancel context.CancelFunc }

func (w cancelWriter) Write(p []byte) (int, error) {
	w.cancel()
	return len(p), nil
}

func TestCancel(t *testing.T) {
	files := map[string]string{"Dockerfile": ""}
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		files[name] = strings.Repeat(name, 64<<10) // each fills the output buffer
	}
	dir := mkTree(t, files)

	t.Run("before start", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n, err := Write(ctx, io.Discard, dir)
		if !errors.Is(err, context.Canceled) || n != 0 {
			t.Errorf("Write(%q) = %d, %v, want 0, %v", dir, n, err, context.Canceled)
		}
	})
	t.Run("midway", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		n, err := Write(ctx, cancelWriter{cancel}, dir, WithCompression(gzip.NoCompression))
		if !errors.Is(err, context.Canceled) || n >= len(files) {
			t.Errorf("Write(%q) = %d, %v, want fewer than %d files and %v", dir, n, err, len(files), context.Canceled)
		}
	})
	t.Run("inside a large file", func(t *testing.T) {
		big := mkTree(t, map[string]string{"Dockerfile": ""})
		sparse(t, filepath.Join(big, "big"), 50<<20)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// The first write reaches cancelWriter while "big" is being copied.
		n, err := Write(ctx, cancelWriter{cancel}, big, WithCompression(gzip.NoCompression))
		if !errors.Is(err, context.Canceled) || n != 1 {
			t.Errorf("Write(%q) = %d, %v, want 1, %v", big, n, err, context.Canceled)
		}
	})
}

func TestReader(t *testing.T) {
	dir := mkTree(t, map[string]string{"Dockerfile": "FROM scratch", "a": "a"})

	t.Run("success", func(t *testing.T) {
		r := Reader(context.Background(), dir)
		defer r.Close()
		want := []string{"Dockerfile", "a"}
		if got := names(readTar(t, r)); !slices.Equal(got, want) {
			t.Errorf("Reader(%q) = %q, want %q", dir, got, want)
		}
	})

	tests := []struct {
		name string
		ctx  func() context.Context
		dir  string
		is   error
	}{
		{"missing dir", context.Background, filepath.Join(dir, "nope"), fs.ErrNotExist},
		{"canceled", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, dir, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Reader(tt.ctx(), tt.dir)
			defer r.Close()
			_, err := io.ReadAll(r)
			if !errors.Is(err, tt.is) {
				t.Errorf("Reader(%q) read error = %v, want %v", tt.dir, err, tt.is)
			}
		})
	}

	t.Run("close stops writer", func(t *testing.T) {
		big := mkTree(t, map[string]string{"Dockerfile": ""})
		sparse(t, filepath.Join(big, "big"), 50<<20)
		before := runtime.NumGoroutine()
		r := Reader(context.Background(), big, WithCompression(gzip.NoCompression))
		if _, err := io.ReadFull(r, make([]byte, 1024)); err != nil {
			t.Fatalf("reading: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		deadline := time.Now().Add(testenv.Scale(5 * time.Second))
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				t.Fatalf("Reader(%q) goroutine still running after Close: %d goroutines, want %d", big, runtime.NumGoroutine(), before)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestSize(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		opts  []Option
	}{{
		name:  "plain",
		files: map[string]string{"Dockerfile": "FROM scratch\n", "a": "aaa", "d/b": "bb", "e/": ""},
	}, {
		name: "ignores and exceptions",
		files: map[string]string{
			".dockerignore": "vendor\n!vendor/keep\n**/*.tmp\n",
			"Dockerfile":    "FROM scratch\n",
			"vendor/keep":   "kkkk",
			"vendor/drop":   "ddddddd",
			"x/y.tmp":       "tttttt",
			"x/y.go":        "go",
			"link":          "-> x/y.go",
		},
	}, {
		name: "custom Dockerfile and its ignore file",
		files: map[string]string{
			"ci/Dockerfile":              "FROM scratch\n",
			"ci/Dockerfile.dockerignore": "big\n",
			"big":                        strings.Repeat("b", 1000),
			"small":                      "s",
		},
		opts: []Option{WithDockerfile("ci/Dockerfile")},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := mkTree(t, tt.files)
			entries := writeTar(t, dir, tt.opts...)
			var wantBytes int64
			for _, e := range entries {
				if e.hdr.Typeflag == tar.TypeReg {
					wantBytes += e.hdr.Size
				}
			}
			files, bytes, err := Size(dir, tt.opts...)
			if err != nil || files != countFiles(entries) || bytes != wantBytes {
				t.Errorf("Size(%q) = %d, %d, %v, want %d, %d, nil", dir, files, bytes, err, countFiles(entries), wantBytes)
			}
		})
	}
}

// sparse creates a file of size bytes that takes no disk space.
func sparse(t *testing.T, name string, size int64) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBoundedMemory(t *testing.T) {
	const size = 50 << 20
	const limit = 16 << 20
	dir := mkTree(t, map[string]string{"Dockerfile": ""})
	sparse(t, filepath.Join(dir, "big"), size)

	for _, level := range []int{gzip.BestSpeed, gzip.NoCompression} {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)

		// Sample the heap while Write runs: growth after it returns could be
		// hidden by a GC.
		stop, peakc := make(chan struct{}), make(chan uint64)
		go func() {
			var peak uint64
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
				select {
				case <-stop:
					peakc <- peak
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		n, err := Write(context.Background(), io.Discard, dir, WithCompression(level))
		close(stop)
		peak := <-peakc
		var after runtime.MemStats
		runtime.ReadMemStats(&after)

		if err != nil || n != 2 {
			t.Fatalf("Write(%q, level %d) = %d, %v, want 2, nil", dir, level, n, err)
		}
		if grew := int64(peak) - int64(before.HeapAlloc); grew > limit {
			t.Errorf("Write(%q, level %d) HeapAlloc grew by %d bytes, want < %d", dir, level, grew, limit)
		}
		// Cumulative allocation can't be hidden by GC at all.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > limit {
			t.Errorf("Write(%q, level %d) allocated %d bytes in total, want < %d", dir, level, alloc, limit)
		}
	}
}

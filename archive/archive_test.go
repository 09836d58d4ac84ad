package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Fixtures are built in code so every byte of the hostile input is visible
// in the test.

type entry struct {
	hdr  tar.Header
	body []byte
}

func testTime() time.Time { return time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC) }

func file(name, body string) entry {
	return fileMode(name, body, 0o644)
}

func fileMode(name, body string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: testTime()}, body: []byte(body)}
}

func dir(name string) entry { return dirMode(name, 0o755) }

func dirMode(name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: testTime()}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime()}}
}

func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: testTime()}}
}

func special(name string, typ byte) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o644, ModTime: testTime()}}
}

func tarball(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("writing header %q: %v", hdr.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("writing %q: %v", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("closing tar: %v", err)
	}
	return buf.Bytes()
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressions(t testing.TB, b []byte) map[string][]byte {
	return map[string][]byte{"tar": b, "tar.gz": gzipped(t, b)}
}

// sandbox is a parent directory P holding the extraction target P/ctx and a
// sibling P/outside with one sentinel file, which hostile archives aim at.
type sandbox struct {
	parent, ctx, outside string
}

const sentinel = "sentinel"

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	p := t.TempDir()
	s := sandbox{parent: p, ctx: filepath.Join(p, "ctx"), outside: filepath.Join(p, "outside")}
	for _, d := range []string{s.ctx, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.outside, sentinel), []byte(sentinel), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// check asserts that nothing exists in P but P/ctx's tree and the untouched
// P/outside, and that no symlink under P/ctx resolves outside it.
func (s sandbox) check(t testing.TB, desc string) {
	t.Helper()
	err := filepath.WalkDir(s.parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case p == s.parent || p == s.ctx || p == s.outside:
			return nil
		case strings.HasPrefix(p, s.ctx+string(filepath.Separator)):
			if d.Type()&fs.ModeSymlink != 0 {
				rel, _ := filepath.Rel(s.ctx, p)
				if escapesCtx(s.ctx, filepath.ToSlash(rel)) {
					target, _ := os.Readlink(p)
					t.Errorf("Extract(%q) left symlink %s -> %s resolving outside the context", desc, rel, target)
				}
			}
			return nil
		case p == filepath.Join(s.outside, sentinel):
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 || string(b) != sentinel {
				t.Errorf("Extract(%q) modified %s: mode %v, content %q", desc, p, fi.Mode(), b)
			}
			return nil
		}
		t.Errorf("Extract(%q) wrote %s outside the context", desc, p)
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", s.parent, err)
	}
}

// escapesCtx resolves rel under ctx the way the kernel would and reports
// whether it leaves ctx. A path that stops resolving cannot leave.
func escapesCtx(ctx, rel string) bool {
	var cur []string
	todo := strings.Split(rel, "/")
	for links := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return true
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := filepath.Join(append([]string{ctx}, append(cur[:len(cur):len(cur)], c)...)...)
		fi, err := os.Lstat(p)
		if err != nil {
			return false
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = append(cur, c)
			continue
		}
		if links++; links > maxSymlinks {
			return false
		}
		target, err := os.Readlink(p)
		if err != nil {
			return false
		}
		if filepath.IsAbs(target) {
			return true
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return false
}

func wantArchiveError(t *testing.T, desc string, err error, entry string, tooLarge bool) {
	t.Helper()
	var aerr *Error
	if !errors.As(err, &aerr) {
		t.Errorf("Extract(%q) = %v, want *Error", desc, err)
		return
	}
	if entry == "*" {
		// any entry, or none
	} else if aerr.Entry != entry {
		t.Errorf("Extract(%q) = %v, want error naming entry %q", desc, err, entry)
	}
	if entry != "" && entry != "*" && !strings.Contains(err.Error(), strconv.Quote(entry)) {
		t.Errorf("Extract(%q) = %v, want message naming %q", desc, err, entry)
	}
	if aerr.TooLarge != tooLarge {
		t.Errorf("Extract(%q) = %v (TooLarge %v), want TooLarge %v", desc, err, aerr.TooLarge, tooLarge)
	}
}

func TestExtractRejects(t *testing.T) {
	long := strings.Repeat("a", 17)
	tests := []struct {
		name     string
		entries  func(s sandbox) []entry
		entry    string // the entry the error must name
		lim      Limits
		tooLarge bool
	}{{
		name:    "absolute path",
		entries: func(s sandbox) []entry { return []entry{file("/abs", "x")} },
		entry:   "/abs",
	}, {
		name:    "absolute path into outside",
		entries: func(s sandbox) []entry { return []entry{file(s.outside+"/pwned", "x")} },
		entry:   "<outside>/pwned",
	}, {
		name:    "dotdot",
		entries: func(s sandbox) []entry { return []entry{file("../outside/pwned", "x")} },
		entry:   "../outside/pwned",
	}, {
		name:    "nested dotdot",
		entries: func(s sandbox) []entry { return []entry{file("a/../../outside/pwned", "x")} },
		entry:   "a/../../outside/pwned",
	}, {
		name:    "bare dotdot dir",
		entries: func(s sandbox) []entry { return []entry{dir("..")} },
		entry:   "..",
	}, {
		name:    "symlink to dot then dotdot",
		entries: func(s sandbox) []entry { return []entry{symlink("a", "."), file("a/../../outside/pwned", "x")} },
		entry:   "a/../../outside/pwned",
	}, {
		name:    "absolute symlink to etc then file",
		entries: func(s sandbox) []entry { return []entry{symlink("sub", "/etc"), file("sub/passwd", "x")} },
		entry:   "sub",
	}, {
		name:    "absolute symlink to outside then file",
		entries: func(s sandbox) []entry { return []entry{symlink("sub", s.outside), file("sub/pwned", "x")} },
		entry:   "sub",
	}, {
		name:    "relative symlink to outside then file",
		entries: func(s sandbox) []entry { return []entry{symlink("sub", "../outside"), file("sub/pwned", "x")} },
		entry:   "sub",
	}, {
		name:    "nested symlink climbing too far",
		entries: func(s sandbox) []entry { return []entry{symlink("d/e/up", "../../../outside")} },
		entry:   "d/e/up",
	}, {
		// Lexically d/x/../.. is ".", but the kernel applies ".." after
		// following x, which leads to P.
		name: "symlink chain through another symlink",
		entries: func(s sandbox) []entry {
			return []entry{symlink("d/x", "."), symlink("d/a", "x/../.."), file("d/a/outside/pwned", "x")}
		},
		entry: "d/a",
	}, {
		name:    "parent is symlink inside context",
		entries: func(s sandbox) []entry { return []entry{dir("real"), symlink("lnk", "real"), file("lnk/f", "x")} },
		entry:   "lnk/f",
	}, {
		name:    "parent is a file",
		entries: func(s sandbox) []entry { return []entry{file("f", "x"), file("f/g", "x")} },
		entry:   "f/g",
	}, {
		name:    "hardlink to outside",
		entries: func(s sandbox) []entry { return []entry{hardlink("h", "../outside/"+sentinel)} },
		entry:   "h",
	}, {
		name:    "hardlink to absolute outside",
		entries: func(s sandbox) []entry { return []entry{hardlink("h", s.outside+"/"+sentinel)} },
		entry:   "h",
	}, {
		name:    "hardlink to etc passwd",
		entries: func(s sandbox) []entry { return []entry{hardlink("h", "/etc/passwd")} },
		entry:   "h",
	}, {
		name:    "hardlink to missing file",
		entries: func(s sandbox) []entry { return []entry{hardlink("h", "nope")} },
		entry:   "h",
	}, {
		name:    "hardlink to directory",
		entries: func(s sandbox) []entry { return []entry{dir("d"), hardlink("h", "d")} },
		entry:   "h",
	}, {
		name:    "hardlink to symlink",
		entries: func(s sandbox) []entry { return []entry{file("f", "x"), symlink("s", "f"), hardlink("h", "s")} },
		entry:   "h",
	}, {
		name: "hardlink through symlink parent",
		entries: func(s sandbox) []entry {
			return []entry{dir("d"), file("d/f", "x"), symlink("l", "d"), hardlink("h", "l/f")}
		},
		entry: "h",
	}, {
		name:    "hardlink to itself",
		entries: func(s sandbox) []entry { return []entry{file("f", "x"), hardlink("f", "f")} },
		entry:   "f",
	}, {
		name:    "char device",
		entries: func(s sandbox) []entry { return []entry{special("null", tar.TypeChar)} },
		entry:   "null",
	}, {
		name:    "block device",
		entries: func(s sandbox) []entry { return []entry{special("sda", tar.TypeBlock)} },
		entry:   "sda",
	}, {
		name:    "fifo",
		entries: func(s sandbox) []entry { return []entry{special("fifo", tar.TypeFifo)} },
		entry:   "fifo",
	}, {
		name:    "contiguous file",
		entries: func(s sandbox) []entry { return []entry{special("cont", tar.TypeCont)} },
		entry:   "cont",
	}, {
		name:    "unknown type",
		entries: func(s sandbox) []entry { return []entry{special("z", 'Z')} },
		entry:   "z",
	}, {
		name:    "name too long",
		entries: func(s sandbox) []entry { return []entry{file(long, "x")} },
		entry:   long,
		lim:     Limits{MaxNameLen: 16},
	}, {
		name:    "component too long",
		entries: func(s sandbox) []entry { return []entry{file(strings.Repeat("c", 256), "x")} },
		entry:   strings.Repeat("c", 256),
	}, {
		name:    "symlink target too long",
		entries: func(s sandbox) []entry { return []entry{symlink("s", long)} },
		entry:   "s",
		lim:     Limits{MaxNameLen: 16},
	}, {
		name:    "empty symlink target",
		entries: func(s sandbox) []entry { return []entry{symlink("s", "")} },
		entry:   "s",
	}, {
		name:    "file over directory",
		entries: func(s sandbox) []entry { return []entry{dir("d"), file("d", "x")} },
		entry:   "d",
	}, {
		name:    "symlink over directory",
		entries: func(s sandbox) []entry { return []entry{dir("d"), symlink("d", "e")} },
		entry:   "d",
	}, {
		name:    "file replacing context dir",
		entries: func(s sandbox) []entry { return []entry{file(".", "x")} },
		entry:   ".",
	}, {
		name:     "too many files",
		entries:  func(s sandbox) []entry { return []entry{file("a", "1"), file("b", "2"), file("c", "3")} },
		entry:    "c",
		lim:      Limits{MaxFiles: 2},
		tooLarge: true,
	}, {
		name:     "too many implied directories",
		entries:  func(s sandbox) []entry { return []entry{file("a/b/c/d", "1")} },
		entry:    "a/b/c/d",
		lim:      Limits{MaxFiles: 2},
		tooLarge: true,
	}, {
		name:     "too many bytes",
		entries:  func(s sandbox) []entry { return []entry{file("a", "123456"), file("b", "123456")} },
		entry:    "b",
		lim:      Limits{MaxBytes: 10},
		tooLarge: true,
	}}
	for _, tc := range tests {
		for kind := range compressions(t, nil) {
			desc := tc.name + " " + kind
			t.Run(desc, func(t *testing.T) {
				s := newSandbox(t)
				b := tarball(t, tc.entries(s)...)
				if kind == "tar.gz" {
					b = gzipped(t, b)
				}
				_, err := Extract(context.Background(), bytes.NewReader(b), s.ctx, tc.lim)
				wantArchiveError(t, desc, err, strings.ReplaceAll(tc.entry, "<outside>", s.outside), tc.tooLarge)
				s.check(t, desc)
			})
		}
	}
}

func TestExtractCorrupt(t *testing.T) {
	// 512-byte content makes the half of the plain tar fall on a header
	// boundary, which archive/tar alone would accept as a complete archive.
	good := tarball(t, file("a", strings.Repeat("a", 1024)), file("b", ""))
	if len(good) != 3072 {
		t.Fatalf("fixture is %d bytes, want 3072 so that its half ends right after a", len(good))
	}
	gz := gzipped(t, good)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff
	garbled := bytes.Clone(gz)
	garbled[len(garbled)/2] ^= 0xff
	var noEnd bytes.Buffer
	tw := tar.NewWriter(&noEnd)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 1, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("a"))
	tw.Flush() // no Close: no end-of-archive marker

	// archive/tar refuses to write a NUL in a name, so patch it into the
	// PAX record afterwards; the header checksum does not cover it.
	nulName := tarball(t, file(strings.Repeat("n", 120)+"\x01z", "x"))
	nulName = bytes.Replace(nulName, []byte("\x01z"), []byte("\x00z"), 1)

	sparse := tarball(t, special("s", tar.TypeGNUSparse))
	trailer := gzipped(t, append(bytes.Clone(good), make([]byte, 2<<20)...))
	bomb := tarball(t, entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": strings.Repeat("x", 100000)}}}, file("a", "a"))

	tests := []struct {
		name     string
		in       []byte
		lim      Limits
		tooLarge bool
	}{
		{name: "truncated tar", in: good[:len(good)/2]},
		{name: "truncated tar mid-header", in: good[:700]},
		{name: "truncated gzip", in: gz[:len(gz)/2]},
		{name: "gzip with bad checksum", in: badCRC},
		{name: "garbled gzip", in: garbled},
		{name: "gzip header only", in: gz[:10]},
		{name: "missing end marker", in: noEnd.Bytes()},
		{name: "empty input", in: nil},
		{name: "not an archive", in: []byte(strings.Repeat("hello world\n", 100))},
		{name: "NUL in PAX path", in: nulName},
		{name: "GNU sparse", in: sparse},
		{name: "huge trailer", in: trailer, tooLarge: true},
		{name: "expands beyond limit", in: bomb, lim: Limits{MaxBytes: 1, MaxFiles: 2, MaxNameLen: 8}, tooLarge: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := Extract(context.Background(), bytes.NewReader(tc.in), s.ctx, tc.lim)
			wantArchiveError(t, tc.name, err, "*", tc.tooLarge)
			s.check(t, tc.name)
		})
	}
}

func TestExtract(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<15) // 1.5 MiB
	bigEntry := fileMode("d/big.bin", string(big), 0o644)
	entries := []entry{
		dirMode("./", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "ignored"}}},
		dirMode("d/", 0o700),
		fileMode("d/e/f.txt", "hello\n", 0o640),
		fileMode("empty", "", 0o400),
		fileMode("suid", "#!/bin/sh\n", 0o6755),
		fileMode("sticky", "x", 0o1777),
		symlink("d/link", "e/f.txt"),
		symlink("up", "d/e"),
		symlink("d/e/back", "../../empty"),
		symlink("dangling", "nowhere/yet"),
		hardlink("d/hard", "d/e/f.txt"),
		hardlink("./hard2", "./empty"),
		bigEntry,
	}
	type want struct {
		mode   fs.FileMode
		body   string // regular files
		target string // symlinks
	}
	wants := map[string]want{
		"d":         {mode: fs.ModeDir | 0o700}, // as docker build keeps it
		"d/e":       {mode: fs.ModeDir | 0o755},
		"d/e/f.txt": {mode: 0o640, body: "hello\n"},
		"empty":     {mode: 0o600},
		"suid":      {mode: 0o755, body: "#!/bin/sh\n"},
		"sticky":    {mode: 0o777, body: "x"},
		"d/link":    {mode: fs.ModeSymlink, target: "e/f.txt"},
		"up":        {mode: fs.ModeSymlink, target: "d/e"},
		"d/e/back":  {mode: fs.ModeSymlink, target: "../../empty"},
		"dangling":  {mode: fs.ModeSymlink, target: "nowhere/yet"},
		"d/hard":    {mode: 0o640, body: "hello\n"},
		"hard2":     {mode: 0o600},
		"d/big.bin": {mode: 0o644, body: string(big)},
	}
	raw := tarball(t, entries...)
	for kind, in := range compressions(t, raw) {
		desc := "good " + kind
		t.Run(kind, func(t *testing.T) {
			s := newSandbox(t)
			got, err := Extract(context.Background(), bytes.NewReader(in), s.ctx, Limits{})
			if err != nil {
				t.Fatalf("Extract(%q) = %v, want nil", desc, err)
			}
			sum := sha256.Sum256(in)
			if want := (Stats{SHA256: hex.EncodeToString(sum[:]), Files: 12, Bytes: int64(len(big) + 6 + 10 + 1)}); *got != want {
				t.Errorf("Extract(%q) = %+v, want %+v", desc, *got, want)
			}
			s.check(t, desc)

			seen := map[string]bool{}
			filepath.WalkDir(s.ctx, func(p string, d fs.DirEntry, err error) error {
				if err != nil || p == s.ctx {
					return err
				}
				rel, _ := filepath.Rel(s.ctx, p)
				seen[rel] = true
				w, ok := wants[rel]
				if !ok {
					t.Errorf("Extract(%q) created unexpected %s", desc, rel)
					return nil
				}
				fi, err := os.Lstat(p)
				if err != nil {
					return err
				}
				mode := fi.Mode()
				if mode&fs.ModeSymlink != 0 {
					mode = fs.ModeSymlink // symlink permission bits are meaningless
				}
				if mode != w.mode {
					t.Errorf("Extract(%q): %s has mode %v, want %v", desc, rel, mode, w.mode)
				}
				switch {
				case mode.IsRegular():
					if b, _ := os.ReadFile(p); string(b) != w.body {
						t.Errorf("Extract(%q): %s has %d bytes, want %d", desc, rel, len(b), len(w.body))
					}
					if !fi.ModTime().Equal(testTime()) {
						t.Errorf("Extract(%q): %s has mtime %v, want %v", desc, rel, fi.ModTime(), testTime())
					}
				case rel == "d": // d/e is implied and has no mtime of its own
					if !fi.ModTime().Equal(testTime()) {
						t.Errorf("Extract(%q): %s has mtime %v, want %v", desc, rel, fi.ModTime(), testTime())
					}
				default:
					if target, _ := os.Readlink(p); target != w.target {
						t.Errorf("Extract(%q): %s -> %q, want %q", desc, rel, target, w.target)
					}
				}
				return nil
			})
			for rel := range wants {
				if !seen[rel] {
					t.Errorf("Extract(%q) did not create %s", desc, rel)
				}
			}
			a, _ := os.Stat(filepath.Join(s.ctx, "d/hard"))
			b, _ := os.Stat(filepath.Join(s.ctx, "d/e/f.txt"))
			if !os.SameFile(a, b) {
				t.Errorf("Extract(%q): d/hard is not a hardlink of d/e/f.txt", desc)
			}
		})
	}
}

// TestExtractReplaces checks that later entries replace earlier ones without
// ever writing through them.
func TestExtractReplaces(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		files   map[string]string // regular files and their content afterwards
		dirs    []string
		missing []string
	}{{
		name:    "file replaces file",
		entries: []entry{file("f", "one"), file("f", "two")},
		files:   map[string]string{"f": "two"},
	}, {
		name:    "file replaces symlink",
		entries: []entry{file("target", "orig"), symlink("f", "target"), file("f", "new")},
		files:   map[string]string{"target": "orig", "f": "new"},
	}, {
		name:    "file replaces hardlink",
		entries: []entry{file("a", "orig"), hardlink("b", "a"), file("b", "new")},
		files:   map[string]string{"a": "orig", "b": "new"},
	}, {
		name:    "dir replaces symlink",
		entries: []entry{dir("real"), symlink("s", "real"), dir("s"), file("s/x", "1")},
		files:   map[string]string{"s/x": "1"},
		dirs:    []string{"real", "s"},
		missing: []string{"real/x"},
	}, {
		name:    "dir replaces file",
		entries: []entry{file("d", "x"), dir("d"), file("d/x", "1")},
		files:   map[string]string{"d/x": "1"},
		dirs:    []string{"d"},
	}, {
		name:    "dir over dir",
		entries: []entry{dir("d"), file("d/x", "1"), dirMode("d", 0o750)},
		files:   map[string]string{"d/x": "1"},
		dirs:    []string{"d"},
	}, {
		name:    "symlink replaces file",
		entries: []entry{file("f", "x"), symlink("f", "g"), file("g", "y")},
		files:   map[string]string{"g": "y"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			if _, err := Extract(context.Background(), bytes.NewReader(tarball(t, tc.entries...)), s.ctx, Limits{}); err != nil {
				t.Fatalf("Extract(%q) = %v, want nil", tc.name, err)
			}
			s.check(t, tc.name)
			for rel, body := range tc.files {
				p := filepath.Join(s.ctx, rel)
				fi, err := os.Lstat(p)
				if err != nil || !fi.Mode().IsRegular() {
					t.Errorf("Extract(%q): %s = %v, %v, want regular file", tc.name, rel, fi, err)
					continue
				}
				if b, _ := os.ReadFile(p); string(b) != body {
					t.Errorf("Extract(%q): %s = %q, want %q", tc.name, rel, b, body)
				}
			}
			for _, rel := range tc.dirs {
				if fi, err := os.Lstat(filepath.Join(s.ctx, rel)); err != nil || !fi.IsDir() {
					t.Errorf("Extract(%q): %s = %v, %v, want directory", tc.name, rel, fi, err)
				}
			}
			for _, rel := range tc.missing {
				if _, err := os.Lstat(filepath.Join(s.ctx, rel)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Extract(%q): %s exists (%v), want it missing", tc.name, rel, err)
				}
			}
		})
	}
}

// TestExtractTypeRegA covers the pre-POSIX '\x00' type flag, which
// tar.Writer normalises away, by patching the header.
func TestExtractTypeRegA(t *testing.T) {
	b := tarball(t, file("old", "x"))
	b[156] = tar.TypeRegA
	copy(b[148:156], "        ") // the checksum counts its own field as spaces
	var sum int
	for _, c := range b[:blockSize] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	s := newSandbox(t)
	if _, err := Extract(context.Background(), bytes.NewReader(b), s.ctx, Limits{}); err != nil {
		t.Fatalf("Extract(%q) = %v, want nil", "TypeRegA", err)
	}
	if got, err := os.ReadFile(filepath.Join(s.ctx, "old")); string(got) != "x" {
		t.Errorf("Extract(%q): old = %q, %v, want %q", "TypeRegA", got, err, "x")
	}
}

func TestExtractOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	const uid, gid = 1234, 5678
	s := newSandbox(t)
	in := tarball(t, dir("d"), file("d/e/f", "x"), symlink("l", "d/e/f"), hardlink("h", "d/e/f"))
	if _, err := Extract(context.Background(), bytes.NewReader(in), s.ctx, Limits{}, WithOwner(uid, gid)); err != nil {
		t.Fatalf("Extract(%q) = %v, want nil", "owned", err)
	}
	for _, rel := range []string{"d", "d/e", "d/e/f", "l", "h"} {
		fi, err := os.Lstat(filepath.Join(s.ctx, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("Extract(%q): %s owned by %d:%d, want %d:%d", "owned", rel, st.Uid, st.Gid, uid, gid)
		}
	}
}

func TestExtractNotArchiveErrors(t *testing.T) {
	in := tarball(t, file("a", strings.Repeat("a", 4096)), file("b", "b"))
	boom := errors.New("connection reset")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		r    io.Reader
		want error
	}{
		{name: "canceled", ctx: canceled, r: bytes.NewReader(in), want: context.Canceled},
		{name: "upload fails", ctx: context.Background(), r: io.MultiReader(bytes.NewReader(in[:2000]), iotestErrReader{boom}), want: boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := Extract(tc.ctx, tc.r, s.ctx, Limits{})
			var aerr *Error
			if !errors.Is(err, tc.want) || errors.As(err, &aerr) {
				t.Errorf("Extract(%q) = %v, want %v", tc.name, err, tc.want)
			}
		})
	}

	s := newSandbox(t)
	os.WriteFile(filepath.Join(s.ctx, "junk"), nil, 0o644)
	if _, err := Extract(context.Background(), bytes.NewReader(in), s.ctx, Limits{}); err == nil {
		t.Errorf("Extract(%q) = %v, want error for a non-empty directory", "non-empty dir", err)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"a/b", "a/b", true},
		{"./a//b/", "a/b", true},
		{"a/../b", "b", true},
		{".", ".", true},
		{"", "", false},
		{"a\x00b", "", false},
		{"/a", "", false},
		{"..", "", false},
		{"../a", "", false},
		{"a/../../b", "", false},
		{strings.Repeat("a", 256), "", false},
		{strings.Repeat("a/", 2049), "", false},
	}
	for _, tc := range tests {
		got, reason := cleanPath(tc.in, defaultMaxNameLen)
		if got != tc.want || (reason == "") != tc.ok {
			t.Errorf("cleanPath(%q) = %q, %q, want %q, ok %v", tc.in, got, reason, tc.want, tc.ok)
		}
	}
}

func TestValidateDockerfile(t *testing.T) {
	s := newSandbox(t)
	os.WriteFile(filepath.Join(s.outside, "Dockerfile"), []byte("FROM evil"), 0o644)
	ctx := tarball(t,
		file("Dockerfile", "FROM scratch"),
		file("sub/Dockerfile.dev", "FROM scratch"),
		symlink("in", "sub/Dockerfile.dev"),
		symlink("subl", "sub"),
		symlink("loop", "loop"),
	)
	if _, err := Extract(context.Background(), bytes.NewReader(ctx), s.ctx, Limits{}); err != nil {
		t.Fatal(err)
	}
	// Extract refuses these, but ValidateDockerfile must not rely on that.
	os.Symlink("../outside/Dockerfile", filepath.Join(s.ctx, "out"))
	os.Symlink(filepath.Join(s.outside, "Dockerfile"), filepath.Join(s.ctx, "abs"))
	os.Symlink("sub/../..", filepath.Join(s.ctx, "updir"))

	tests := []struct {
		rel, want string
		ok        bool
	}{
		{"", "Dockerfile", true},
		{"Dockerfile", "Dockerfile", true},
		{"sub/Dockerfile.dev", "sub/Dockerfile.dev", true},
		{"./sub/../Dockerfile", "Dockerfile", true},
		{"in", "in", true},
		{"subl/Dockerfile.dev", "subl/Dockerfile.dev", true},
		{"missing", "", false},
		{"../Dockerfile", "", false},
		{"../outside/Dockerfile", "", false},
		{"/etc/passwd", "", false},
		{"out", "", false},
		{"abs", "", false},
		{"updir/outside/Dockerfile", "", false},
		{"sub", "", false},
		{".", "", false},
		{"loop", "", false},
		{"Dockerfile/x", "", false},
	}
	for _, tc := range tests {
		got, err := ValidateDockerfile(s.ctx, tc.rel)
		if tc.ok {
			if got != tc.want || err != nil {
				t.Errorf("ValidateDockerfile(%q) = %q, %v, want %q", tc.rel, got, err, tc.want)
			}
			continue
		}
		var aerr *Error
		if !errors.As(err, &aerr) || aerr.Entry != tc.rel {
			t.Errorf("ValidateDockerfile(%q) = %q, %v, want *Error for %q", tc.rel, got, err, tc.rel)
		}
	}
}

// FuzzExtract asserts that no input writes outside the context or leaves a
// symlink leading out of it. Each input is tried twice: as raw bytes, and
// decoded as a list of entries (one per line: a type letter, then
// "name|target-or-body"; @OUT@ stands for the outside directory) so that the
// fuzzer explores entry sequences rather than tar checksums.
func FuzzExtract(f *testing.F) {
	seeds := []string{
		"l a|.\nf a/../../outside/pwned|x",
		"l sub|/etc\nf sub/passwd|x",
		"l sub|@OUT@\nf sub/pwned|x",
		"l sub|../outside\nf sub/pwned|x",
		"l d/x|.\nl d/a|x/../..\nf d/a/outside/pwned|x",
		"d real|\nl lnk|real\nf lnk/f|x",
		"f t|orig\nl f|t\nf f|new",
		"d r|\nl s|r\nd s|\nf s/x|1",
		"f a|x\nh b|a\nf b|y\nh c|../outside/sentinel",
		"l a|b/c\nl b|..\nd b|\nl b/c|..",
		"f ../x|1\nf /x|1\n3 dev|",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add(tarball(f, file("a", "x"), symlink("l", "a"), hardlink("h", "a"), dir("d")))
	f.Add(gzipped(f, tarball(f, symlink("a", "."), file("a/b", "x"))))

	lim := Limits{MaxBytes: 1 << 20, MaxFiles: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSandbox(t)
		Extract(context.Background(), bytes.NewReader(data), s.ctx, lim)
		s.check(t, "raw")

		s = newSandbox(t)
		in := fuzzTarball(string(data), s.outside)
		Extract(context.Background(), bytes.NewReader(in), s.ctx, lim)
		s.check(t, "decoded")
	})
}

func fuzzTarball(spec, outside string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for line := range strings.SplitSeq(spec, "\n") {
		if len(line) < 2 {
			continue
		}
		name, arg, _ := strings.Cut(strings.ReplaceAll(line[2:], "@OUT@", outside), "|")
		hdr := tar.Header{Name: name, Mode: 0o644}
		var body []byte
		switch line[0] {
		case 'f':
			hdr.Typeflag, body, hdr.Size = tar.TypeReg, []byte(arg), int64(len(arg))
		case 'd':
			hdr.Typeflag = tar.TypeDir
		case 'l':
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, arg
		case 'h':
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, arg
		default:
			hdr.Typeflag = line[0]
		}
		// Skip headers tar.Writer refuses rather than corrupting buf.
		if tar.NewWriter(io.Discard).WriteHeader(&hdr) != nil {
			continue
		}
		if tw.WriteHeader(&hdr) != nil {
			break
		}
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes()
}

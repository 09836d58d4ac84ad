package compat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubstitute(t *testing.T) {
	refs := map[string]string{"busybox": "r/busybox:1", "base:x": "r/bases/x:1"}
	for _, tc := range []struct{ in, want, err string }{
		{in: "FROM {{busybox}}\nCOPY . .\n", want: "FROM r/busybox:1\nCOPY . .\n"},
		{in: "FROM {{base:x}} AS a\nFROM {{busybox}}\n", want: "FROM r/bases/x:1 AS a\nFROM r/busybox:1\n"},
		{in: "FROM scratch\n", want: "FROM scratch\n"},
		{in: "FROM {{debian}}\n", err: "unknown placeholder {{debian}}"},
		{in: "FROM {{busybox\n", err: "unclosed placeholder"},
	} {
		got, err := Substitute(tc.in, refs)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Substitute(%q) = %q, %v, want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Substitute(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestPrepare(t *testing.T) {
	src := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM {{busybox}}\nCOPY dir /d\n")
	write("case.yaml", "modes: {dir: \"0700\", dir/f: \"0600\"}\nargs: {A: \"1\"}\n")
	write("dir/f", "f")
	if err := os.Symlink("dir/f", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	cases, err := LoadCases(filepath.Dir(src))
	if err != nil {
		t.Fatal(err)
	}
	var c Case
	for _, x := range cases {
		if x.Dir == src {
			c = x
		}
	}
	if c.Args["A"] != "1" || c.Modes["dir"] != "0700" {
		t.Fatalf("LoadCases spec = %+v, want args A=1 and modes", c.Spec)
	}
	dst := filepath.Join(t.TempDir(), "ctx")
	if err := c.Prepare(dst, map[string]string{"busybox": "r/busybox:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "case.yaml")); !os.IsNotExist(err) {
		t.Errorf("Prepare copied case.yaml (%v), want it left out of the context", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "Dockerfile")); string(b) != "FROM r/busybox:1\nCOPY dir /d\n" {
		t.Errorf("Dockerfile = %q, want the placeholder replaced", b)
	}
	for p, want := range map[string]os.FileMode{"dir": 0o700 | os.ModeDir, "dir/f": 0o600} {
		if fi, err := os.Lstat(filepath.Join(dst, p)); err != nil || fi.Mode() != want {
			t.Errorf("mode of %s = %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "dir/f" {
		t.Errorf("link = %q, %v, want a symlink to dir/f", l, err)
	}
}

func TestLoadKnown(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{in: "- {case: a, builder: kaniko, reason: r, upstream: https://x}\n"},
		{in: "[]\n"},
		{in: "- {case: a, builder: kaniko, reason: r}\n", err: "required"},
		{in: "- {case: a, builder: kaniko, reason: r, upstream: u}\n- {case: a, builder: kaniko, reason: s, upstream: u}\n", err: "listed twice"},
		{in: "- {case: a, builder: kaniko, reason: r, upstream: u, extra: 1}\n", err: "extra"},
		{in: "- {case: a, builder: kaniko, reason: r, upstream: u, owner: buildgw}\n"},
		{in: "- {case: a, builder: kaniko, reason: r, upstream: u, owner: someone}\n", err: "neither upstream nor buildgw"},
	} {
		p := filepath.Join(t.TempDir(), "known.yaml")
		os.WriteFile(p, []byte(tc.in), 0o600)
		_, err := LoadKnown(p)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("LoadKnown(%q) = %v, want error %q", tc.in, err, tc.err)
		}
	}
	if _, err := LoadKnown("known.yaml"); err != nil {
		t.Errorf("LoadKnown(known.yaml) = %v", err)
	}
}

package sandbox

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	systemPEM = "-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----"
	extraPEM  = "-----BEGIN CERTIFICATE-----\nextra\n-----END CERTIFICATE-----\n"
)

func TestWriteCABundle(t *testing.T) {
	dir := t.TempDir()
	system := filepath.Join(dir, "system.crt")
	if err := os.WriteFile(system, []byte(systemPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		system string
		extra  string
		want   string
	}{
		{"system and extra", system, extraPEM, systemPEM + "\n" + extraPEM},
		{"system only", system, "", systemPEM},
		// A host without ca-certificates: the build's own roots stay.
		{"no system bundle", filepath.Join(dir, "missing.crt"), extraPEM, extraPEM},
		{"neither", filepath.Join(dir, "missing.crt"), "", ""},
	} {
		dst := filepath.Join(t.TempDir(), "ca-certificates.crt")
		if err := WriteCABundle(dst, tc.system, []byte(tc.extra)); err != nil {
			t.Errorf("%s: WriteCABundle = %v, want nil", tc.name, err)
			continue
		}
		if got, _ := os.ReadFile(dst); string(got) != tc.want {
			t.Errorf("%s: WriteCABundle wrote %q, want %q", tc.name, got, tc.want)
		}
	}
	// A bundle that exists but cannot be read is an error, not an empty
	// bundle.
	if err := WriteCABundle(filepath.Join(dir, "out.crt"), dir, []byte(extraPEM)); err == nil {
		t.Errorf("WriteCABundle(system %s, a directory) = nil, want an error", dir)
	}
}

func TestExtraFiles(t *testing.T) {
	if _, err := ExtraFiles(map[FD]*os.File{FD(2): os.Stdin}); err == nil {
		t.Error("ExtraFiles(fd 2) = nil error, want one: stderr is not the sandbox's to take")
	}
	if _, err := ExtraFiles(map[FD]*os.File{Release + 1: os.Stdin}); err == nil {
		t.Errorf("ExtraFiles(fd %d) = nil error, want one", Release+1)
	}
	// Each descriptor reaches the child at its number: the child writes
	// the number it was given to each, and each pipe must hold its own.
	fds := []FD{InNamespace, NetworkReady, Release}
	readers := map[FD]*os.File{}
	handed := map[FD]*os.File{}
	var script []string
	for _, fd := range fds {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		readers[fd], handed[fd] = r, w
		script = append(script, fmt.Sprintf("echo %d >&%d", int(fd), int(fd)))
	}
	extra, err := ExtraFiles(handed)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", strings.Join(script, "; "))
	cmd.ExtraFiles = extra
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, fd := range fds {
		handed[fd].Close()
		got, err := io.ReadAll(readers[fd])
		if want := fmt.Sprintf("%d\n", int(fd)); err != nil || string(got) != want {
			t.Errorf("the child's fd %d (%s) carried %q, %v; want %q", int(fd), fd, got, err, want)
		}
	}
	// Left out: closed in the child.
	extra, err = ExtraFiles(map[FD]*os.File{Release: handed[Release]})
	if err != nil || len(extra) != int(Release)-2 || extra[0] != nil || extra[1] != nil {
		t.Errorf("ExtraFiles(Release only) = %v, %v; want nil at %s and %s", extra, err, InNamespace, NetworkReady)
	}
}

func TestRootPrepare(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "executor")
	if err := os.WriteFile(exe, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	// Every path the init mounts on or kaniko expects, as a directory.
	mountPoints := []string{Dev, Proc, Workspace, OldRoot, Output, BaseImages, LayerCache, SharedLayerCache, CertDir, DockerConfig}
	for _, tc := range []struct {
		name string
		root Root
		// executor: "bind" (an empty file), "link" or "copy".
		executor string
	}{
		{"copy", Root{}, "copy"},
		{"bind", Root{BindExecutor: true}, "bind"},
	} {
		r := tc.root
		r.Dir = filepath.Join(t.TempDir(), "root")
		r.Executor = exe
		r.SystemCAs = filepath.Join(t.TempDir(), "missing.crt")
		r.ExtraCAs = []byte(extraPEM)
		if os.Geteuid() == 0 && tc.executor == "copy" {
			// As root, handed to a sandbox user: a hard link on the same
			// file system.
			r.Owner = &syscall.Credential{Uid: 54321, Gid: 54322}
			tc.executor = "link"
		}
		if err := r.Prepare(); err != nil {
			t.Fatalf("%s: Prepare = %v", tc.name, err)
		}
		for _, p := range append([]string{"/"}, mountPoints...) {
			fi, err := os.Lstat(r.Path(p))
			if err != nil || !fi.IsDir() {
				t.Errorf("%s: after Prepare, %s: %v, want a directory", tc.name, p, err)
				continue
			}
			if st := fi.Sys().(*syscall.Stat_t); r.Owner != nil && (st.Uid != r.Owner.Uid || st.Gid != r.Owner.Gid) {
				t.Errorf("%s: %s owned by %d:%d, want the sandbox user %d:%d", tc.name, p, st.Uid, st.Gid, r.Owner.Uid, r.Owner.Gid)
			}
		}
		if ents, _ := os.ReadDir(r.Path(DockerConfig)); len(ents) != 0 {
			t.Errorf("%s: %s holds %d entries, want none (no credential enters a sandbox)", tc.name, DockerConfig, len(ents))
		}
		if got, _ := os.ReadFile(r.Path(CABundle)); string(got) != extraPEM {
			t.Errorf("%s: CA bundle %q, want the extra roots %q", tc.name, got, extraPEM)
		}
		got, err := os.ReadFile(r.Path(Executor))
		if err != nil {
			t.Fatal(err)
		}
		same := ino(r.Path(Executor)) == ino(exe)
		switch tc.executor {
		case "bind":
			if len(got) != 0 || r.Start() != exe {
				t.Errorf("%s: executor in the root holds %d bytes and Start() = %s; want an empty file to bind over and %s", tc.name, len(got), r.Start(), exe)
			}
		case "link", "copy":
			if !bytes.Equal(got, []byte("#!/bin/true\n")) || same != (tc.executor == "link") || r.Start() != r.Path(Executor) {
				t.Errorf("%s: executor in the root: %q, same inode %v, Start() = %s; want a %s of %s, started from the root", tc.name, got, same, r.Start(), tc.executor, exe)
			}
		}
		// A root is laid out once: an existing one is never reused.
		if err := r.Prepare(); err == nil {
			t.Errorf("%s: Prepare over an existing root = nil, want an error", tc.name)
		}
	}
}

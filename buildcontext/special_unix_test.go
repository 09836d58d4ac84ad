//go:build unix

package buildcontext

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSpecialFiles(t *testing.T) {
	tests := []struct {
		name   string
		make   func(t *testing.T, path string)
		ignore string
		want   string // substring of the error; "" = success
	}{
		{"fifo", mkfifo, "", "p is a named pipe"},
		{"socket", mksock, "", "p is a socket"},
		{"excluded fifo", mkfifo, "p\n", ""},
		{"fifo in excluded dir", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			mkfifo(t, filepath.Join(p, "fifo"))
		}, "p\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"Dockerfile": ""}
			if tt.ignore != "" {
				files[".dockerignore"] = tt.ignore
			}
			dir := mkTree(t, files)
			tt.make(t, filepath.Join(dir, "p"))

			_, err := Write(context.Background(), io.Discard, dir)
			_, _, serr := Size(dir)
			for _, e := range []struct {
				fn  string
				err error
			}{{"Write", err}, {"Size", serr}} {
				if tt.want == "" && e.err != nil {
					t.Errorf("%s(%q) = %v, want nil", e.fn, dir, e.err)
				}
				if tt.want != "" && (e.err == nil || !strings.Contains(e.err.Error(), tt.want)) {
					t.Errorf("%s(%q) = %v, want error containing %q", e.fn, dir, e.err, tt.want)
				}
			}
		})
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
}

func mksock(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("listen unix: %v", err)
	}
	t.Cleanup(func() { l.Close() })
}

func TestUnreadableExcludedDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read anything")
	}
	dir := mkTree(t, map[string]string{"Dockerfile": "", ".dockerignore": "secret\n", "secret/key": ""})
	secret := filepath.Join(dir, "secret")
	if err := os.Chmod(secret, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(secret, 0o755) })

	if _, err := Write(context.Background(), io.Discard, dir); err != nil {
		t.Errorf("Write(%q) = %v, want nil", dir, err)
	}
}

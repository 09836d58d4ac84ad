package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/hostfs"
)

// A gateway killed with -9 leaves its tmpfs workspaces mounted below the
// state directory; the test's cleanup must not leave them behind.
func TestStateDirDetachesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount a tmpfs (scripts/test runs as root)")
	}
	var dir string
	t.Run("leave a mount", func(t *testing.T) {
		dir = StateDir(t)
		ws := filepath.Join(dir, "mem", "job")
		if err := os.MkdirAll(ws, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("buildgw-test", ws, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mounting a tmpfs at %s: %v", ws, err)
		}
		if err := os.WriteFile(filepath.Join(ws, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	ms, err := hostfs.Mounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 0 {
		t.Errorf("Mounts(%q) after the test = %d, want 0", dir, len(ms))
		hostfs.UnmountUnder(dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stat(%q) after the test = %v, want not exist", dir, err)
		os.RemoveAll(dir)
	}
}

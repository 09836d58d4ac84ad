package workspace

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/diskusage"
)

// flattenTree leaves a tree of 5000 nested directories (with a file at
// the bottom) no deeper than its bound, everything still there, so that
// os.RemoveAll removes it with a few descriptors.
func TestFlattenTree(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mounting a tmpfs (the tests run as root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	const depth = 5000
	for range depth {
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		nfd, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = nfd
	}
	f, err := unix.Openat(fd, "bottom", unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(f)
	unix.Close(fd)
	if _, err := diskusage.Measure(dir); !errors.Is(err, diskusage.ErrTooDeep) {
		t.Fatalf("Measure(the tree before flattening) = %v, want ErrTooDeep", err)
	}

	if err := flattenTree(dir, flattenDepth); err != nil {
		t.Fatalf("flattenTree = %v", err)
	}
	u, err := diskusage.Measure(dir)
	if err != nil {
		t.Fatalf("Measure(the flattened tree) = %v, want it within diskusage.MaxDepth", err)
	}
	if want := depth + 2; u.Entries != want {
		t.Errorf("Measure(the flattened tree) = %d entries, want all %d still there", u.Entries, want)
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, unix.EBUSY) {
		t.Errorf("os.RemoveAll(the flattened tree) = %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("after os.RemoveAll, %d entries are left", len(ents))
	}
}

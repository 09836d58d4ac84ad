package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// devOf returns the filesystem of dir.
func devOf(t *testing.T, dir string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}

// unlinkedFile opens a new file in dir, removes its name, writes n bytes
// into it and returns it, open, with its inode.
func unlinkedFile(t *testing.T, dir string, n int) (*os.File, Inode) {
	t.Helper()
	f, err := os.CreateTemp(dir, "held")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, Inode{st.Dev, st.Ino}
}

// unlinkedMapping maps a new file of n bytes in dir, written through
// the mapping, with its name removed and its descriptor closed: only the
// mapping holds it.
func unlinkedMapping(t *testing.T, dir string, n int) Inode {
	t.Helper()
	f, err := os.CreateTemp(dir, "mapped")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(n)); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	for i := range b {
		b[i] = 1
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	return Inode{st.Dev, st.Ino}
}

func TestUnlinkedHeld(t *testing.T) {
	dir := t.TempDir()
	dev := devOf(t, dir)
	const n = 4 << 20
	_, opened := unlinkedFile(t, dir, n)
	mapped := unlinkedMapping(t, dir, n)
	// A file with a name is a walk's to count, not this.
	named, err := os.Create(filepath.Join(dir, "named"))
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	if _, err := named.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	got, err := UnlinkedHeld([]int{self}, dev, 100)
	if err != nil {
		t.Fatalf("UnlinkedHeld(%d) = %v", self, err)
	}
	for _, tc := range []struct {
		name string
		ino  Inode
	}{
		{"open, unlinked, written", opened},
		{"mapped, unlinked, closed", mapped},
	} {
		if got[tc.ino] < n {
			t.Errorf("UnlinkedHeld(%d)[%s] = %d, want at least %d", self, tc.name, got[tc.ino], n)
		}
	}
	if len(got) != 2 {
		t.Errorf("UnlinkedHeld(%d) = %v, want the 2 deleted files only", self, got)
	}
	// Another filesystem's deleted files are not asked for.
	if got, err := UnlinkedHeld([]int{self}, dev+1, 100); err != nil || len(got) != 0 {
		t.Errorf("UnlinkedHeld(%d) on another device = %v, %v, want none", self, got, err)
	}
	// Processes gone are skipped.
	if got, err := UnlinkedHeld([]int{1 << 30}, dev, 100); err != nil || len(got) != 0 {
		t.Errorf("UnlinkedHeld(no such process) = %v, %v, want none", got, err)
	}
}

// Without the capability to follow /proc/PID/map_files, a mapped deleted
// file counts by the length mapped.
func TestUnlinkedMaps(t *testing.T) {
	dir := t.TempDir()
	const n = 1 << 20
	ino := unlinkedMapping(t, dir, n)
	s := unlinkedScan{dev: devOf(t, dir), max: 100, found: map[Inode]int64{}}
	if err := s.maps(os.Getpid()); err != nil {
		t.Fatalf("maps(self) = %v", err)
	}
	if s.found[ino] < n {
		t.Errorf("maps(self)[mapping] = %d, want at least %d", s.found[ino], n)
	}
}

func TestUnlinkedHeldBound(t *testing.T) {
	dir := t.TempDir()
	for range 3 {
		unlinkedFile(t, dir, 4096)
	}
	got, err := UnlinkedHeld([]int{os.Getpid()}, devOf(t, dir), 2)
	if !errors.Is(err, ErrTooManyUnlinked) || len(got) != 2 {
		t.Errorf("UnlinkedHeld(self, max 2) with 3 deleted files = %d files, %v, want 2 and ErrTooManyUnlinked", len(got), err)
	}
}

package hostfs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Process
		ok   bool
	}{
		{"42 (sleep) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1 2 3", Process{Pid: 42, PPid: 7, Start: 12345, State: 'S', Comm: "sleep"}, true},
		// A command name can hold spaces and parentheses.
		{"43 (a) Z 1 (b) R 9 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 1", Process{Pid: 43, PPid: 9, Start: 777, State: 'R', Comm: "a) Z 1 (b"}, true},
		{"44 (x) S 1", Process{}, false},
		{"garbage", Process{}, false},
	} {
		got, ok := parseStat([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseStat(%q) = %+v, %v, want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("hostfs-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func points(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := Mounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ps []string
	for _, m := range ms {
		ps = append(ps, m.Mountpoint)
	}
	return ps
}

func TestUnmountUnder(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "state")
	// Escaped in mountinfo as \040 and \134.
	odd := filepath.Join(dir, `with space\and backslash`)
	deep := filepath.Join(dir, "a", "b")
	kept := filepath.Join(dir, "kept")
	beside := filepath.Join(base, "state-beside") // shares the prefix, not below
	for _, d := range []string{dir, odd, filepath.Join(dir, "a"), deep, kept, filepath.Join(kept, "inner"), beside} {
		mountTmpfs(t, d)
	}
	mountTmpfs(t, deep) // stacked on the first: both go
	want := []string{dir, odd, filepath.Join(dir, "a"), deep, kept, filepath.Join(kept, "inner"), deep}
	if got := points(t, dir); !slices.Equal(got, want) {
		t.Fatalf("Mounts(%q) = %q, want %q", dir, got, want)
	}
	if m, err := MountAt(odd); err != nil || m == nil || m.Source != "hostfs-test" || m.FSType != "tmpfs" {
		t.Errorf("MountAt(%q) = %+v, %v, want the tmpfs", odd, m, err)
	}
	if err := UnmountUnder(dir, dir, kept); err != nil {
		t.Fatalf("UnmountUnder(%q) = %v", dir, err)
	}
	if got, want := points(t, dir), []string{dir, kept}; !slices.Equal(got, want) {
		t.Errorf("mounts after UnmountUnder(%q, %q, %q) = %q, want %q", dir, dir, kept, got, want)
	}
	if got := points(t, beside); len(got) != 1 {
		t.Errorf("mounts at %s after UnmountUnder(%q) = %q, want it untouched", beside, dir, got)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatalf("UnmountUnder(%q) = %v", dir, err)
	}
	if got := points(t, dir); len(got) != 0 {
		t.Errorf("mounts after UnmountUnder(%q) = %q, want none", dir, got)
	}
}

func TestTmpfsSpace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mem")
	mountTmpfs(t, dir)
	size, free, ok := TmpfsSpace(dir)
	if !ok || size != 1<<20 || free != size {
		t.Errorf("TmpfsSpace(%q) = %d, %d, %v, want %d, %d, true", dir, size, free, ok, 1<<20, 1<<20)
	}
	if !IsTmpfsMount(dir) {
		t.Errorf("IsTmpfsMount(%q) = false, want true", dir)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	if IsTmpfsMount(sub) {
		t.Errorf("IsTmpfsMount(%q) = true for a directory on a tmpfs mounted above, want false", sub)
	}
}

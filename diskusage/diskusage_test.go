package diskusage_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/diskusage"
)

// du is the reference: GNU du counts allocated blocks, hard links once and
// (with -x) stays on one filesystem, as Measure does.
func du(t testing.TB, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "-x", "--block-size=1", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatalf("du %s = %q: %v", dir, out, err)
	}
	return n
}

func write(t testing.TB, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMeasure(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T, dir, outside string)
		atLeast int64 // Measure must report at least this many bytes
		atMost  int64 // and at most this many
	}{
		{"empty", func(t *testing.T, dir, outside string) {}, 0, 64 << 10},
		{"one file of 8 MiB", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(dir, "a", "b", "big"), 8<<20)
		}, 8 << 20, 9 << 20},
		{"a hard link counts once", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(dir, "big"), 8<<20)
			if err := os.Link(filepath.Join(dir, "big"), filepath.Join(dir, "again")); err != nil {
				t.Fatal(err)
			}
		}, 8 << 20, 9 << 20},
		{"a file also linked from outside is not counted", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(outside, "shared"), 8<<20)
			for _, n := range []string{"one", "two"} {
				if err := os.Link(filepath.Join(outside, "shared"), filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
		}, 0, 64 << 10},
		{"a sparse file counts its blocks, not its length", func(t *testing.T, dir, outside string) {
			f, err := os.Create(filepath.Join(dir, "sparse"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1 << 30); err != nil {
				t.Fatal(err)
			}
		}, 0, 64 << 10},
		{"a symlink is not followed", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(outside, "big"), 8<<20)
			if err := os.Symlink(outside, filepath.Join(dir, "out")); err != nil {
				t.Fatal(err)
			}
		}, 0, 64 << 10},
		{"many small files", func(t *testing.T, dir, outside string) {
			for i := range 2000 {
				write(t, filepath.Join(dir, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%d", i)), 100)
			}
		}, 2000 * 512, 2000*4096 + 51*4096 + 64<<10},
		{"a deep tree", func(t *testing.T, dir, outside string) {
			// 300 levels of 40 bytes: longer than PATH_MAX, so made
			// relative to each parent.
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for range 300 {
				const name = "level-with-a-long-name-to-pass-path-max"
				if err := unix.Mkdirat(fd, name, 0o755); err != nil {
					t.Fatal(err)
				}
				nfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
				unix.Close(fd)
				if err != nil {
					t.Fatal(err)
				}
				fd = nfd
			}
			unix.Close(fd)
		}, 300 * 512, 300*4096 + 64<<10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := t.TempDir(), t.TempDir()
			tc.make(t, dir, outside)
			u, err := diskusage.Measure(dir)
			if err != nil {
				t.Fatalf("Measure(%s) = %v", tc.name, err)
			}
			if u.Bytes < tc.atLeast || u.Bytes > tc.atMost {
				t.Errorf("Measure(%s) = %d bytes, want %d to %d", tc.name, u.Bytes, tc.atLeast, tc.atMost)
			}
			// du refuses paths beyond PATH_MAX, and counts what is shared.
			if !strings.Contains(tc.name, "deep") && !strings.Contains(tc.name, "outside") {
				if want := du(t, dir); u.Bytes != want {
					t.Errorf("Measure(%s) = %d bytes, du says %d", tc.name, u.Bytes, want)
				}
			}
		})
	}
}

// TestMeasureSkipsMounts: a filesystem mounted inside the tree (here a
// tmpfs holding 8 MiB) is not counted, as with du -x.
func TestMeasureSkipsMounts(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("mounting a tmpfs (the tests run as root): %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	write(t, filepath.Join(mnt, "big"), 8<<20)
	u, err := diskusage.Measure(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.Bytes > 64<<10 {
		t.Errorf("Measure(dir with a tmpfs of 8 MiB inside) = %d bytes, want the mount skipped", u.Bytes)
	}
}

func TestMeasureMissing(t *testing.T) {
	if _, err := diskusage.Measure(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Errorf("Measure(missing dir) = nil error, want one")
	}
}

// BenchmarkMeasure walks a tree shaped like an unpacked base image (a
// few thousand small files in a few hundred directories), against GNU du
// on the same tree as the baseline.
//
//	go test -run XXX -bench Measure -count 3 ./builder/diskusage/
func BenchmarkMeasure(b *testing.B) {
	for _, n := range []int{10000, 50000} {
		dir := b.TempDir()
		for i := range n {
			write(b, filepath.Join(dir, fmt.Sprintf("d%03d", i%(n/40)), fmt.Sprintf("s%d", i%7), fmt.Sprintf("f%d", i)), 1000)
		}
		b.Run(fmt.Sprintf("files=%d/Measure", n), func(b *testing.B) {
			for range b.N {
				if _, err := diskusage.Measure(dir); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("files=%d/du", n), func(b *testing.B) {
			for range b.N {
				du(b, dir)
			}
		})
	}
}

// chain makes n nested directories of 1-byte names under dir, relative to
// each parent (the path is far beyond PATH_MAX), and returns the last.
func chain(t testing.TB, dir string, n int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
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
	unix.Close(fd)
}

// heapGrowth runs f and returns how many bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMeasureDeep: a tree as deep as a hostile RUN step makes it costs the
// walk no more memory than a shallow one, and no more than MaxDepth open
// directories: within the bound it is measured, beyond it Measure fails
// saying so, never with a partial count passed off as the whole.
func TestMeasureDeep(t *testing.T) {
	for _, tc := range []struct {
		depth   int
		wantErr error
	}{
		{diskusage.MaxDepth - 1, nil},
		{30000, diskusage.ErrTooDeep},
	} {
		dir := tmpfs(t)
		chain(t, dir, tc.depth)
		var u diskusage.Usage
		var err error
		got := allocated(func() { u, err = diskusage.Measure(dir) })
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("Measure(a tree %d deep) = %v, want %v", tc.depth, err, tc.wantErr)
		}
		if err == nil && u.Entries != tc.depth+1 {
			t.Errorf("Measure(a tree %d deep) = %d entries, want %d", tc.depth, u.Entries, tc.depth+1)
		}
		// A KiB of buffer per level and a few strings per entry.
		if limit := uint64(2 << 20); got > limit {
			t.Errorf("Measure(a tree %d deep) allocated %d bytes, want at most %d", tc.depth, got, limit)
		}
	}
}

// tmpfs mounts a tmpfs for a test (the tests run as root): making deep
// trees on a busy disk takes a minute, on a tmpfs a second, and the
// unmount removes what os.RemoveAll could not.
func tmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=512m"); err != nil {
		t.Fatalf("mounting a tmpfs (the tests run as root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestMeasureOutOfFiles: a walk that cannot open a directory (no file
// descriptor left) fails rather than reporting what it saw.
func TestMeasureOutOfFiles(t *testing.T) {
	dir := t.TempDir()
	chain(t, dir, 64)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Leave about 20 descriptors free.
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	low := lim
	low.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fd >= 44 {
			unix.Close(fd)
			break
		}
		fds = append(fds, fd)
	}
	if _, err := diskusage.Measure(dir); !errors.Is(err, unix.EMFILE) {
		t.Errorf("Measure(64 levels with 20 descriptors left) = %v, want EMFILE", err)
	}
}

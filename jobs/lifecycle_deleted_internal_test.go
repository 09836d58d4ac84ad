package jobs

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/hostfs"
)

// selfProcs tells that this test process is the build's.
type selfProcs struct{}

func (selfProcs) BuildProcs(string) ([]int, error) { return []int{os.Getpid()}, nil }

// heldFile makes a file of n bytes in dir, deleted but open.
func heldFile(t *testing.T, dir string, n int) *os.File {
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
	return f
}

// A deleted file counts at its most until the build ends, even once its
// holder hid it where no scan sees it: in flight in a unix socket.
func TestDeletedFilesHighWater(t *testing.T) {
	dir := t.TempDir()
	d := &deletedFiles{procs: selfProcs{}, dir: dir, seen: map[hostfs.Inode]int64{}}
	const n = 2 << 20
	f := heldFile(t, dir, n)
	got, err := d.measure()
	if err != nil || got < n {
		t.Fatalf("measure() holding %d bytes deleted = %d, %v, want at least %d", n, got, err, n)
	}
	hideInFlight(t, []*os.File{f})
	if again, err := d.measure(); err != nil || again != got {
		t.Errorf("measure() with the deleted file in flight = %d, %v, want %d still", again, err, got)
	}
}

// hideInFlight sends fs into a unix socket, where they stay in flight
// (unreceived), and closes them: no scan of a process sees them, yet
// they take their disk.
func hideInFlight(t *testing.T, fs []*os.File) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
	for len(fs) > 0 {
		batch := fs[:min(len(fs), 200)] // SCM_MAX_FD is 253
		fs = fs[len(batch):]
		var fds []int
		for _, f := range batch {
			fds = append(fds, int(f.Fd()))
		}
		if err := unix.Sendmsg(sp[0], []byte{0}, unix.UnixRights(fds...), nil, 0); err != nil {
			t.Fatal(err)
		}
		for _, f := range batch {
			f.Close()
		}
	}
}

// A build holding more deleted files than MaxDeletedFiles cannot be
// measured, however it spreads them over the scans.
func TestDeletedFilesBound(t *testing.T) {
	dir := t.TempDir()
	d := &deletedFiles{procs: selfProcs{}, dir: dir, seen: map[hostfs.Inode]int64{}}
	var first []*os.File
	for range MaxDeletedFiles / 2 {
		first = append(first, heldFile(t, dir, 1))
	}
	if _, err := d.measure(); err != nil {
		t.Fatalf("measure() holding %d deleted files = %v, want no error", len(first), err)
	}
	hideInFlight(t, first)
	for range MaxDeletedFiles/2 + 1 {
		heldFile(t, dir, 1)
	}
	if _, err := d.measure(); !errors.Is(err, errTooManyDeleted) {
		t.Errorf("measure() after %d deleted files in all, half in flight = %v, want %v", MaxDeletedFiles+1, err, errTooManyDeleted)
	}
}

package kaniko

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// resolveInside keeps a lookup inside its directory, on its file system,
// and away from every symlink: a tree a sandbox wrote can point nowhere
// the gateway would follow.
const resolveInside = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS

// openDir opens the directory at path (which the gateway made, but whose
// last component a sandbox may have replaced) without following a link.
func openDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// errTooLarge is a file over the size its reader allows.
var errTooLarge = errors.New("larger than allowed")

// openFileBeneath opens the regular file rel under dir for reading, see
// resolveInside, and returns it with its size. O_NONBLOCK keeps a FIFO
// from blocking the open; anything but a regular file of at most maxBytes
// is refused.
func openFileBeneath(dir *os.File, rel string, maxBytes int64) (*os.File, int64, error) {
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: resolveInside,
	})
	if err != nil {
		return nil, 0, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, 0, &os.PathError{Op: "stat", Path: rel, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", rel)
	}
	if st.Size > maxBytes {
		f.Close()
		return nil, 0, fmt.Errorf("%s holds %d bytes: %w (%d)", rel, st.Size, errTooLarge, maxBytes)
	}
	return f, st.Size, nil
}

// readFileBeneath reads the regular file rel under dir, of at most
// maxBytes, see openFileBeneath.
func readFileBeneath(dir *os.File, rel string, maxBytes int64) ([]byte, error) {
	f, _, err := openFileBeneath(dir, rel, maxBytes)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The size may grow after the check: read one byte more to notice.
	b, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	if int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("%s: %w (%d)", rel, errTooLarge, maxBytes)
	}
	return b, nil
}

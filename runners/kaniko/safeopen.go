package kaniko

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/ocilayout"
)

// openDir opens the directory at path (which the gateway made, but whose
// last component a sandbox may have replaced) without following a link.
func openDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// readFileBeneath reads the regular file rel under dir, of at most
// maxBytes, opened by ocilayout.OpenBeneath, the one opener of whatever
// a sandbox wrote.
func readFileBeneath(dir *os.File, rel string, maxBytes int64) ([]byte, error) {
	f, _, err := ocilayout.OpenBeneath(dir, rel, maxBytes)
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
		return nil, fmt.Errorf("%s: %w (%d)", rel, ocilayout.ErrTooLarge, maxBytes)
	}
	return b, nil
}

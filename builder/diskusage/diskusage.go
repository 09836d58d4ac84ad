// Package diskusage measures how much disk a directory tree takes, the way
// du does: allocated blocks, each inode once, without crossing into other
// filesystems. The gateway uses it to bound a running build's workspace.
package diskusage

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Usage is what a tree holds.
type Usage struct {
	// Bytes allocated on disk (st_blocks × 512): sparse files count what
	// they really take, and a directory its own blocks.
	Bytes int64
	// Entries walked, directories included.
	Entries int
}

// Measure walks dir and sums the blocks allocated to everything under it
// that removing dir would free. A hard-linked file counts once, and only
// if all its links are under dir: a file shared with something outside
// (an executor or a base image linked in from a shared store) takes no
// space of dir's own. Mounts of other filesystems below dir are not
// entered. Entries that vanish while it walks (a build deletes as it
// goes) are skipped. Directories are opened relative to their parent, so
// neither symlinks swapped in during the walk nor path length matter.
func Measure(dir string) (Usage, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Usage{}, fmt.Errorf("measuring %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return Usage{}, fmt.Errorf("measuring %s: %w", dir, err)
	}
	w := walker{dev: st.Dev, linked: map[uint64]*linked{}}
	w.u.Bytes, w.u.Entries = st.Blocks*512, 1
	if err := w.dir(fd, dir); err != nil {
		return w.u, err
	}
	for _, l := range w.linked {
		if l.seen >= l.nlink {
			w.u.Bytes += l.bytes
		}
	}
	return w.u, nil
}

type walker struct {
	dev    uint64
	linked map[uint64]*linked // inodes with more than one link, by number
	u      Usage
}

type linked struct {
	bytes       int64
	nlink, seen uint64
}

// dir sums the entries of the open directory fd and closes it.
func (w *walker) dir(fd int, path string) error {
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var subdirs []string
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return fmt.Errorf("measuring %s/%s: %w", path, name, err)
			}
			if st.Dev != w.dev {
				continue // a mount point: another filesystem
			}
			w.u.Entries++
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				w.u.Bytes += st.Blocks * 512
				subdirs = append(subdirs, name)
				continue
			}
			if st.Nlink > 1 {
				l := w.linked[st.Ino]
				if l == nil {
					l = &linked{bytes: st.Blocks * 512, nlink: uint64(st.Nlink)}
					w.linked[st.Ino] = l
				}
				l.seen++
				continue
			}
			w.u.Bytes += st.Blocks * 512
		}
		if err != nil {
			break // io.EOF, or a directory removed under us
		}
		if len(names) == 0 {
			break
		}
	}
	// Only one directory per level is open at a time below this one.
	for _, name := range subdirs {
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				continue // removed or replaced since it was listed
			}
			return fmt.Errorf("measuring %s/%s: %w", path, name, err)
		}
		if err := w.dir(cfd, path+"/"+name); err != nil {
			return err
		}
	}
	return nil
}

// Package diskusage measures how much disk a directory tree takes, the way
// du does: allocated blocks, each inode once, without crossing into other
// filesystems. The gateway uses it to bound a running build's workspace.
package diskusage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// MaxDepth bounds how deep Measure descends. A walk holds one open
// directory and a small buffer per level, so a tree made deep on purpose
// would otherwise cost the measurer a file descriptor per level; no real
// build needs a tree deeper than a path (PATH_MAX, 4096 bytes) can name.
const MaxDepth = 1024

// MaxLinked bounds how many hard-linked inodes Measure remembers (about 40
// bytes each) to count every one of them once.
const MaxLinked = 1 << 20

// ErrTooDeep is the error of Measure on a tree deeper than MaxDepth.
var ErrTooDeep = fmt.Errorf("the tree is more than %d directories deep", MaxDepth)

// ErrTooManyLinks is the error of Measure on a tree with more than
// MaxLinked hard-linked inodes.
var ErrTooManyLinks = fmt.Errorf("the tree holds more than %d hard-linked files", MaxLinked)

// direntBuf is the getdents buffer of one level: room for three entries
// with names of the longest length, 255 bytes.
const direntBuf = 1024

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
//
// Its memory does not grow with the shape of the tree: one open
// directory and a buffer of 1 KiB per level, down to MaxDepth levels
// (deeper: ErrTooDeep), and one small record per hard-linked inode, up
// to MaxLinked (more: ErrTooManyLinks). Any error means the tree could
// not be measured in full (EMFILE, a permission error); the Usage then
// holds what was counted.
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
	w := walker{dev: st.Dev, linked: map[uint64]linked{}}
	w.u.Bytes, w.u.Entries = st.Blocks*512, 1
	if err := w.walk(fd); err != nil {
		return w.u, fmt.Errorf("measuring %s: %w", dir, err)
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
	linked map[uint64]linked // inodes with more than one link, by number
	u      Usage
}

type linked struct {
	bytes       int64
	nlink, seen uint32
}

// level is one open directory of the walk and the part of its last
// getdents batch not yet handled.
type level struct {
	fd     int
	buf    []byte
	pos, n int
}

// walk sums everything below the open directory fd, depth first, and
// closes every directory it opened (fd too).
func (w *walker) walk(fd int) error {
	stack := []level{{fd: fd, buf: make([]byte, direntBuf)}}
	var spare [][]byte // buffers of levels left, for the next descent
	defer func() {
		for _, l := range stack {
			unix.Close(l.fd)
		}
	}()
	for len(stack) > 0 {
		l := &stack[len(stack)-1]
		if l.pos >= l.n {
			n, err := unix.Getdents(l.fd, l.buf)
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("listing a directory %d levels down: %w", len(stack)-1, err)
			}
			if n <= 0 {
				// Done (or removed under us): back up a level.
				unix.Close(l.fd)
				spare = append(spare, l.buf)
				stack = stack[:len(stack)-1]
				continue
			}
			l.pos, l.n = 0, n
		}
		// struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name.
		rec := l.buf[l.pos:l.n]
		reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
		l.pos += reclen
		name := rec[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if isDot(name) {
			continue
		}
		sub, err := w.entry(l.fd, string(name))
		if err != nil {
			return fmt.Errorf("%d levels down: %w", len(stack)-1, err)
		}
		if sub < 0 {
			continue
		}
		if len(stack) >= MaxDepth {
			unix.Close(sub)
			return ErrTooDeep
		}
		var buf []byte
		if k := len(spare); k > 0 {
			buf, spare = spare[k-1], spare[:k-1]
		} else {
			buf = make([]byte, direntBuf)
		}
		stack = append(stack, level{fd: sub, buf: buf})
	}
	return nil
}

// entry counts the entry name of the directory fd and returns the open
// directory to descend into if it is one, else -1.
func (w *walker) entry(fd int, name string) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, nil
		}
		return -1, fmt.Errorf("%q: %w", name, err)
	}
	if st.Dev != w.dev {
		return -1, nil // a mount point: another filesystem
	}
	w.u.Entries++
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		w.u.Bytes += st.Blocks * 512
		sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				return -1, nil // removed or replaced since it was listed
			}
			return -1, fmt.Errorf("%q: %w", name, err)
		}
		// A directory swapped for a mount point since the fstatat.
		var sst unix.Stat_t
		if err := unix.Fstat(sub, &sst); err != nil || sst.Dev != w.dev {
			unix.Close(sub)
			return -1, nil
		}
		return sub, nil
	}
	if st.Nlink > 1 {
		l, ok := w.linked[st.Ino]
		if !ok {
			if len(w.linked) >= MaxLinked {
				return -1, ErrTooManyLinks
			}
			l = linked{bytes: st.Blocks * 512, nlink: uint32(min(st.Nlink, 1<<32-1))}
		}
		l.seen++
		w.linked[st.Ino] = l
		return -1, nil
	}
	w.u.Bytes += st.Blocks * 512
	return -1, nil
}

func isDot(name []byte) bool {
	return (len(name) == 1 && name[0] == '.') || (len(name) == 2 && name[0] == '.' && name[1] == '.')
}

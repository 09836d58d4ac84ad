package workspace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

// flattenDepth is how many levels deep os.RemoveAll has to go in a
// workspace once flattenTree is done with it.
const flattenDepth = 32

// flattenTree moves every directory more than depth levels below dir up
// to dir itself (as .flat-N), so that removing dir afterwards holds at
// most about depth directories open at a time, however deep a build made
// its tree. It holds at most depth open directories and 1 KiB each, and
// enters no other filesystem. Entries that vanish are skipped.
func flattenTree(dir string, depth int) error {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	var st unix.Stat_t
	if err := unix.Fstat(root, &st); err != nil {
		return err
	}
	type level struct {
		fd     int
		buf    []byte
		pos, n int
	}
	flat := func(i int) string { return ".flat-" + strconv.Itoa(i) }
	queue, next := []int{-1}, 0 // subtrees to walk: -1 is dir, i is flat(i)
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		var fd int
		if q < 0 {
			fd, err = unix.Dup(root)
		} else {
			fd, err = unix.Openat(root, flat(q), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return err
		}
		stack := []level{{fd: fd, buf: make([]byte, 1024)}}
		for len(stack) > 0 {
			l := &stack[len(stack)-1]
			if l.pos >= l.n {
				n, err := unix.Getdents(l.fd, l.buf)
				if err != nil || n <= 0 {
					unix.Close(l.fd)
					stack = stack[:len(stack)-1]
					continue
				}
				l.pos, l.n = 0, n
			}
			rec := l.buf[l.pos:l.n]
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			l.pos += reclen
			typ, name := rec[18], rec[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if string(name) == "." || string(name) == ".." || (typ != unix.DT_DIR && typ != unix.DT_UNKNOWN) {
				continue
			}
			var sst unix.Stat_t
			if err := unix.Fstatat(l.fd, string(name), &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil ||
				sst.Mode&unix.S_IFMT != unix.S_IFDIR || sst.Dev != st.Dev {
				continue // gone, no directory, or a mount point
			}
			if len(stack) >= depth {
				err := unix.Renameat(l.fd, string(name), root, flat(next))
				if err == nil {
					queue = append(queue, next)
					next++
					continue
				}
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EBUSY) {
					continue
				}
				for _, l := range stack {
					unix.Close(l.fd)
				}
				return err
			}
			sub, err := unix.Openat(l.fd, string(name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			stack = append(stack, level{fd: sub, buf: make([]byte, 1024)})
		}
	}
	return nil
}

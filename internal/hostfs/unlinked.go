package hostfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Inode names one file of the host.
type Inode struct{ Dev, Ino uint64 }

// ErrTooManyUnlinked is the error of UnlinkedHeld when the processes hold
// more distinct deleted files than it was allowed to return.
var ErrTooManyUnlinked = errors.New("too many deleted files held open")

// UnlinkedHeld returns the regular files on the filesystem dev that have
// no name left (a link count of 0: unlinked while open, or made with
// O_TMPFILE) and that the processes pids hold, open in a descriptor of
// any of their threads or mapped into their memory, with the bytes each
// has allocated (st_blocks × 512). A tree walk never sees such a file,
// though it takes disk until its last holder lets go. Processes and
// descriptors that go away while it reads are skipped. More than max
// distinct files: ErrTooManyUnlinked, with the map holding max of them.
//
// Mapped files are stat'ed through /proc/PID/map_files, which only a
// process with CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE) of the host may
// follow; without it, a mapping of a deleted file counts the mapped
// length read from /proc/PID/maps instead, which misses the part of the
// file outside every mapping.
func UnlinkedHeld(pids []int, dev uint64, max int) (map[Inode]int64, error) {
	s := unlinkedScan{dev: dev, max: max, found: map[Inode]int64{}}
	for _, pid := range pids {
		if err := s.process(pid); err != nil {
			return s.found, err
		}
	}
	return s.found, nil
}

type unlinkedScan struct {
	dev   uint64
	max   int
	found map[Inode]int64
}

// gone reports whether err means that what was read went away: the
// process ended, or the descriptor or mapping was closed.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

func (s *unlinkedScan) process(pid int) error {
	// Threads cloned without CLONE_FILES have tables of their own.
	tasks, err := readNames(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, tid := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/fd", pid, tid)
		if err := s.links(dir); err != nil {
			return err
		}
	}
	err = s.links(fmt.Sprintf("/proc/%d/map_files", pid))
	if errors.Is(err, unix.EPERM) {
		return s.maps(pid)
	}
	return err
}

// links adds the files the magic links in dir lead to.
func (s *unlinkedScan) links(dir string) error {
	names, err := readNames(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(dir+"/"+n, &st); err != nil {
			if gone(err) {
				continue
			}
			return fmt.Errorf("reading %s/%s: %w", dir, n, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 0 || st.Dev != s.dev {
			continue
		}
		if err := s.add(Inode{st.Dev, st.Ino}, st.Blocks*512); err != nil {
			return err
		}
	}
	return nil
}

// maps adds the deleted files process pid maps, each counted by the
// length of its largest mapping.
func (s *unlinkedScan) maps(pid int) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		if gone(err) {
			return nil
		}
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset major:minor inode path (deleted)
		line := sc.Text()
		if !strings.HasSuffix(line, " (deleted)") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 6 {
			continue
		}
		lo, hi, ok1 := strings.Cut(fs[0], "-")
		maj, min, ok2 := strings.Cut(fs[3], ":")
		if !ok1 || !ok2 {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		ma, err3 := strconv.ParseUint(maj, 16, 32)
		mi, err4 := strconv.ParseUint(min, 16, 32)
		ino, err5 := strconv.ParseUint(fs[4], 10, 64)
		if errors.Join(err1, err2, err3, err4, err5) != nil || ino == 0 {
			continue
		}
		if d := unix.Mkdev(uint32(ma), uint32(mi)); d == s.dev {
			if err := s.add(Inode{d, ino}, int64(end-start)); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil && !gone(err) {
		return fmt.Errorf("reading /proc/%d/maps: %w", pid, err)
	}
	return nil
}

func (s *unlinkedScan) add(ino Inode, bytes int64) error {
	old, ok := s.found[ino]
	if !ok && len(s.found) >= s.max {
		return fmt.Errorf("%w: more than %d", ErrTooManyUnlinked, s.max)
	}
	s.found[ino] = max(old, bytes)
	return nil
}

// readNames lists dir; a directory gone (its process ended) is empty.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil && !gone(err) {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return names, nil
}

// Package statedir guards a gateway's state directory: one gateway at a
// time holds it, and a directory that shows earlier use is told apart
// from a new one, so that a lost job store is noticed instead of silently
// started afresh.
package statedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the lock file in a state directory.
const LockFile = "buildgw.lock"

// Lock is a held state directory. It is held until Release, or until the
// process ends (the kernel drops a flock with its last descriptor).
type Lock struct {
	f *os.File
}

// Acquire creates dir if needed and takes its lock without waiting. A
// directory held by another process is an error naming that process, and
// nothing in the directory is touched.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	p := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state directory lock %s: %w", p, err)
	}
	// Made by root (buildgw backup, say) in the directory of a gateway
	// that runs as another user: that user must still be able to lock it.
	var st, dst unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil && unix.Stat(dir, &dst) == nil && st.Uid != dst.Uid && os.Geteuid() == 0 {
		f.Chown(int(dst.Uid), int(dst.Gid))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(p); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					holder = fmt.Sprintf("another process (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("state directory %s is in use by %s, which holds %s: stop it first, or give this gateway a state directory of its own", dir, holder, p)
		}
		return nil, fmt.Errorf("locking state directory %s: %w", p, err)
	}
	// The holder's pid, for the message above; the lock is the flock, not
	// the content.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release gives the directory up.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Evidence returns a regular file under dir that shows the directory has
// been used by a gateway (a build log, a workspace, a cached layer), or
// "" if there is none. The lock file, the names in skip (relative to dir)
// and lost+found (the root of a fresh ext4 volume) are not evidence, nor
// are empty directories: a gateway that failed to start leaves only those.
func Evidence(dir string, skip ...string) (string, error) {
	ignore := map[string]bool{LockFile: true, "lost+found": true}
	for _, s := range skip {
		ignore[s] = true
	}
	var found string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Gone meanwhile, or a sandbox's own directory: not ours to
			// judge.
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if ignore[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			found = p
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("looking through state directory %s: %w", dir, err)
	}
	return found, nil
}

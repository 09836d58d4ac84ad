package policy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the current policy of a file and swaps in a new one when
// the file is reloaded. Readers take Policy() once per decision and keep
// that value, so that both Decide calls of a build can use one policy.
type Store struct {
	path string
	cur  atomic.Pointer[Policy]

	mu    sync.Mutex // serializes reloads, so that stamp matches what was loaded
	stamp fileStamp
}

// fileStamp is what Watch compares to see that the file changed. The inode
// is part of it because editors and Kubernetes ConfigMaps replace a file by
// renaming another onto it, which may keep size and mtime.
type fileStamp struct {
	mtime time.Time
	size  int64
	dev   uint64
	ino   uint64
}

func (a fileStamp) equal(b fileStamp) bool {
	return a.mtime.Equal(b.mtime) && a.size == b.size && a.dev == b.dev && a.ino == b.ino
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{mtime: fi.ModTime(), size: fi.Size()}
	st.dev, st.ino = fileID(fi)
	return st, nil
}

// NewStore loads the policy at path. It fails if the file does not load:
// a gateway must not start without a policy.
func NewStore(path string) (*Store, error) {
	s := &Store{path: path}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Policy returns the current policy.
func (s *Store) Policy() *Policy { return s.cur.Load() }

// Reload loads the file again. On error the current policy stays in force
// and the error is returned: a typo in an edit must not open or close the
// gateway.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Stat before reading: if the file changes in between, the next poll
	// sees a newer stamp and loads again.
	before, statErr := stampOf(s.path)
	p, err := Load(s.path)
	if statErr == nil {
		// Remembered even when the load fails, so that Watch reports a
		// bad file once rather than at every poll.
		s.stamp = before
	}
	if err != nil {
		return err
	}
	// A file written in place can be read half-written, and a truncated
	// policy can still parse (a deny_tags list cut short). Refuse what
	// was read while the file changed; the next poll loads the result.
	if after, err := stampOf(s.path); err != nil || !after.equal(before) {
		s.stamp = fileStamp{}
		return fmt.Errorf("policy %s changed while it was read; not loaded", s.path)
	}
	s.cur.Store(p)
	return nil
}

// Watch polls the file every interval (5s if interval <= 0) and reloads it
// when its mtime, size or inode changed, until ctx is done. Failures are
// logged and leave the current policy in force. Polling rather than inotify
// works the same on every file system and for symlinked ConfigMap files.
func (s *Store) Watch(ctx context.Context, log *slog.Logger, interval time.Duration) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastStatErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := stampOf(s.path)
		if err != nil {
			if err.Error() != lastStatErr {
				log.Warn("policy file unreadable; keeping the current policy", "path", s.path, "err", err)
				lastStatErr = err.Error()
			}
			continue
		}
		lastStatErr = ""
		s.mu.Lock()
		changed := !st.equal(s.stamp)
		s.mu.Unlock()
		if !changed {
			continue
		}
		if err := s.Reload(); err != nil {
			log.Error("policy reload failed; keeping the current policy", "path", s.path, "err", err)
			continue
		}
		log.Info("policy reloaded", "path", s.path)
		for _, w := range s.Policy().Warnings() {
			log.Warn("policy: " + w)
		}
	}
}

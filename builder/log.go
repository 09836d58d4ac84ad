package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Log is a job's build log. It lives in a file so that memory stays flat
// however much a build prints, and so it outlives the job's workspace.
// Any number of readers can follow it while it is written.
type Log struct {
	path string

	mu      sync.Mutex
	f       *os.File
	size    int64
	closed  bool
	changed chan struct{} // closed and replaced on every write and on Close
}

func newLog(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	return &Log{path: path, f: f, changed: make(chan struct{})}, nil
}

// Write appends p to the log and wakes its followers.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, errors.New("log is closed")
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	close(l.changed)
	l.changed = make(chan struct{})
	return n, err
}

// Printf writes one gateway line to the log.
func (l *Log) Printf(format string, args ...any) {
	fmt.Fprintf(l, "#buildgw "+format+"\n", args...)
}

// Close ends the log: followers return once they have read all of it.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.changed)
	return l.f.Close()
}

// WriteTo copies the log from byte offset on to w. With follow it keeps copying until the log
// is closed or ctx ends; w is flushed after each chunk if it is an
// http.Flusher-like writer.
func (l *Log) WriteTo(ctx context.Context, w io.Writer, offset int64, follow bool) error {
	f, err := os.Open(l.path)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	defer f.Close()
	flush := func() {}
	if fl, ok := w.(interface{ Flush() }); ok {
		flush = fl.Flush
	}
	off := offset
	buf := make([]byte, 32<<10)
	for {
		l.mu.Lock()
		size, closed, changed := l.size, l.closed, l.changed
		l.mu.Unlock()
		for off < size {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("reading log: %w", err)
			}
			if n == 0 {
				break
			}
		}
		flush()
		if !follow || closed {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// openLog reopens the log of a job recovered after a restart, to append
// to it; a log that went missing starts empty.
func openLog(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reopening log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reopening log: %w", err)
	}
	return &Log{path: path, f: f, size: fi.Size(), changed: make(chan struct{})}, nil
}

// closedLog is the complete log of a job that ended before the gateway
// started: readable, never written again.
func closedLog(path string) *Log {
	l := &Log{path: path, closed: true, changed: make(chan struct{})}
	close(l.changed)
	if fi, err := os.Stat(path); err == nil {
		l.size = fi.Size()
	}
	return l
}

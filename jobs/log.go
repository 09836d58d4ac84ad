package jobs

import (
	"bytes"
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
//
// A log has a cap (log_max_bytes): it keeps the first half of it, and of
// what comes after only the last half of the cap, in a ring file beside
// the log. Followers see the head as it is written; when the log is
// closed the ring is appended behind one line saying how many bytes were
// dropped, so offsets into the log never move.
type Log struct {
	path string
	max  int64 // 0: no cap

	mu      sync.Mutex
	f       *os.File
	size    int64 // bytes in the file, what readers see
	last    byte  // the file's last byte
	ring    *os.File
	over    int64 // bytes written past the head, into the ring
	closed  bool
	changed chan struct{} // closed and replaced on every write and on Close
	// remote, if set, serves WriteTo: the log of a build in a shared
	// store, which this replica does not write.
	remote func(ctx context.Context, w io.Writer, offset int64, follow bool) error
}

// tailSuffix names the ring file of a log that is over its cap.
const tailSuffix = ".tail"

func newLog(path string, max int64) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	return &Log{path: path, max: max, f: f, changed: make(chan struct{})}, nil
}

// head and tail split the cap.
func (l *Log) head() int64 { return l.max - l.max/2 }
func (l *Log) tail() int64 { return l.max / 2 }

// Write appends p to the log and wakes its followers. Past the head, p
// goes to the ring.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, errors.New("log is closed")
	}
	n, err := l.write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return n, err
}

func (l *Log) write(p []byte) (int, error) {
	in := p
	if l.max > 0 {
		in = p[:min(int64(len(p)), max(l.head()-l.size, 0))]
	}
	if len(in) > 0 {
		n, err := l.f.Write(in)
		l.size += int64(n)
		if n > 0 {
			l.last = in[n-1]
		}
		if err != nil {
			return n, err
		}
	}
	rest := p[len(in):]
	if len(rest) == 0 {
		return len(p), nil
	}
	if l.ring == nil {
		r, err := os.OpenFile(l.path+tailSuffix, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
		if err != nil {
			return len(in), fmt.Errorf("creating log tail: %w", err)
		}
		l.ring = r
	}
	// Only the last tail() bytes of rest can survive.
	t := l.tail()
	if int64(len(rest)) > t {
		l.over += int64(len(rest)) - t
		rest = rest[int64(len(rest))-t:]
	}
	for len(rest) > 0 {
		pos := l.over % t
		k := min(int64(len(rest)), t-pos)
		if _, err := l.ring.WriteAt(rest[:k], pos); err != nil {
			return len(p) - len(rest), fmt.Errorf("writing log tail: %w", err)
		}
		l.over += k
		rest = rest[k:]
	}
	return len(p), nil
}

// Stored returns how many bytes the log takes on disk, its ring
// included.
func (l *Log) Stored() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.over > 0 {
		return l.size + min(l.over, l.tail())
	}
	return l.size
}

// closeRing appends what the ring holds, oldest first, after a line
// naming what was dropped, and removes the ring. The kept tail starts
// at a line. l.mu is held.
func (l *Log) closeRing() error {
	if l.ring == nil {
		return nil
	}
	defer os.Remove(l.path + tailSuffix)
	defer l.ring.Close()
	t := l.tail()
	kept := min(l.over, t)
	start := l.over % t // the oldest byte, once the ring has wrapped
	if l.over <= t {
		start = 0
	}
	read := func(off, n int64) ([]byte, error) {
		b := make([]byte, n) // n ≤ 32 KiB, within the ring
		_, err := l.ring.ReadAt(b, (start+off)%t)
		return b, err
	}
	// Skip to the first whole line when the ring lost the start of one.
	skip := int64(0)
	if l.over > t {
		for skip < kept {
			k := min(32<<10, kept-skip, t-(start+skip)%t)
			b, err := read(skip, k)
			if err != nil {
				return fmt.Errorf("reading log tail: %w", err)
			}
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				skip += int64(i) + 1
				break
			}
			skip += k
		}
	}
	dropped := l.over - kept + skip
	nl := ""
	if l.size > 0 && l.last != '\n' {
		nl = "\n"
	}
	msg := fmt.Sprintf("%s#buildgw log_max_bytes: %d bytes of output dropped here; the log keeps its first %s and its last %s\n", nl, dropped, sizeString(l.head()), sizeString(t))
	if _, err := l.f.WriteString(msg); err != nil {
		return fmt.Errorf("writing log: %w", err)
	}
	l.size += int64(len(msg))
	for off := skip; off < kept; {
		k := min(32<<10, kept-off, t-(start+off)%t)
		b, err := read(off, k)
		if err != nil {
			return fmt.Errorf("reading log tail: %w", err)
		}
		n, err := l.f.Write(b)
		l.size += int64(n)
		if err != nil {
			return fmt.Errorf("writing log: %w", err)
		}
		off += k
	}
	l.ring, l.over = nil, 0
	return nil
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
	err := l.closeRing()
	l.closed = true
	close(l.changed)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteTo copies the log from byte offset on to w. With follow it keeps copying until the log
// is closed or ctx ends; w is flushed after each chunk if it is an
// http.Flusher-like writer.
func (l *Log) WriteTo(ctx context.Context, w io.Writer, offset int64, follow bool) error {
	if l.remote != nil {
		return l.remote(ctx, w, offset, follow)
	}
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
// to it; a log that went missing starts empty. The tail a crash left in
// a ring is lost.
func openLog(path string, max int64) (*Log, error) {
	os.Remove(path + tailSuffix)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reopening log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reopening log: %w", err)
	}
	// What is there counts as the head, so that appending stays within
	// the cap.
	if max > 0 && fi.Size() > max-max/2 {
		max = 2 * fi.Size()
	}
	return &Log{path: path, max: max, f: f, size: fi.Size(), last: '\n', changed: make(chan struct{})}, nil
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

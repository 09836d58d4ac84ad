package builder

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// LineWriter passes output on in whole lines, so that the several writers
// of one build log (a sandbox's stdout and stderr) never interleave
// mid-line. Flush sends an unterminated last line.
type LineWriter struct {
	mu  sync.Mutex
	buf *bufio.Writer
}

// NewLineWriter returns a LineWriter into w.
func NewLineWriter(w io.Writer) *LineWriter {
	return &LineWriter{buf: bufio.NewWriterSize(w, 64<<10)}
}

// Write implements io.Writer. The whole lines of p pass on together, in
// one write (a line begun by earlier writes is completed in one before):
// a build that floods its log costs a write per pipe read, not one per
// line. An error of the underlying writer is returned, so that a copy into
// a failing log stops.
func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	last := bytes.LastIndexByte(p, '\n')
	if last < 0 {
		l.buf.Write(p)
		return n, nil
	}
	if l.buf.Buffered() > 0 {
		i := bytes.IndexByte(p, '\n')
		l.buf.Write(p[:i+1])
		if err := l.buf.Flush(); err != nil {
			return 0, err
		}
		p, last = p[i+1:], last-(i+1)
	}
	if last >= 0 {
		// The buffer is empty: a write larger than it goes straight
		// through, a smaller one with the Flush.
		l.buf.Write(p[:last+1])
		if err := l.buf.Flush(); err != nil {
			return 0, err
		}
	}
	l.buf.Write(p[last+1:])
	return n, nil
}

// Flush passes on what is buffered.
func (l *LineWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Flush()
}

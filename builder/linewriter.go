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

// Write implements io.Writer. An error of the underlying writer is
// returned, so that a copy into a failing log stops.
func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf.Write(p)
			break
		}
		l.buf.Write(p[:i+1])
		if err := l.buf.Flush(); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

// Flush passes on what is buffered.
func (l *LineWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Flush()
}

package archive

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// countingWriter counts the writes it gets.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// chunked hands out at most 4 KiB a read, as a multipart part does.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), 4096)]) }

func TestCopyFull(t *testing.T) {
	const bufSize = 16 << 10
	tests := []struct {
		size   int
		writes int
	}{
		{0, 0},
		{1, 1},
		{bufSize, 1},
		{bufSize + 1, 2},
		{10 * bufSize, 10},
		{10*bufSize + 4096, 11},
	}
	for _, tc := range tests {
		src := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
		var dst countingWriter
		n, err := copyFull(&dst, chunked{bytes.NewReader(src)}, make([]byte, bufSize))
		if err != nil || n != int64(tc.size) || !bytes.Equal(dst.Bytes(), src) {
			t.Errorf("copyFull(%d bytes) = %d, %v, content equal %v; want %d, nil, true", tc.size, n, err, bytes.Equal(dst.Bytes(), src), tc.size)
		}
		if dst.writes != tc.writes {
			t.Errorf("copyFull(%d bytes) made %d writes, want %d", tc.size, dst.writes, tc.writes)
		}
	}
	// A source that fails says so; so does a destination.
	boom := errors.New("boom")
	if _, err := copyFull(io.Discard, iotest.ErrReader(boom), make([]byte, 16)); !errors.Is(err, boom) {
		t.Errorf("copyFull(failing source) = %v, want %v", err, boom)
	}
	if _, err := copyFull(failingWriter{boom}, bytes.NewReader([]byte("x")), make([]byte, 16)); !errors.Is(err, boom) {
		t.Errorf("copyFull(failing destination) = %v, want %v", err, boom)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

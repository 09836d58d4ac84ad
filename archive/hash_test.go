package archive

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestAsyncHash(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (3*hashBuffers*hashBufferSize)/16+7)
	for _, chunk := range []int{1 << 10, firstHashBuffer + 1, hashBufferSize - 1, hashBufferSize, hashBufferSize + 1, 3 * hashBufferSize, len(data)} {
		for _, size := range []int{0, 1, firstHashBuffer, firstHashBuffer + 1, hashBufferSize, len(data)} {
			t.Run(fmt.Sprintf("%d bytes in writes of %d", size, chunk), func(t *testing.T) {
				a := newAsyncHash(sha256.New())
				for p := data[:size]; len(p) > 0; {
					n := min(chunk, len(p))
					if k, err := a.Write(p[:n]); k != n || err != nil {
						t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
					}
					p = p[n:]
				}
				want := sha256.Sum256(data[:size])
				if got := a.Sum(); !bytes.Equal(got, want[:]) {
					t.Errorf("Sum() = %x, want %x", got, want)
				}
				a.close() // again: does nothing
			})
		}
	}
}

// A small upload costs one small buffer; a large one at most hashBuffers.
func TestAsyncHashBuffers(t *testing.T) {
	tests := []struct {
		size, wantMade int
	}{
		{1 << 10, 1},
		{firstHashBuffer, 1},
		{64 * hashBufferSize, hashBuffers},
	}
	for _, tc := range tests {
		a := newAsyncHash(sha256.New())
		data := make([]byte, tc.size)
		for p := data; len(p) > 0; p = p[min(len(p), 4096):] {
			a.Write(p[:min(len(p), 4096)])
		}
		a.Sum()
		if a.made > tc.wantMade || (tc.wantMade == 1 && a.made != 1) {
			t.Errorf("asyncHash of %d bytes made %d buffers, want at most %d", tc.size, a.made, tc.wantMade)
		}
	}
}

// An extraction that fails early closes the hash before its goroutine
// has even started.
func TestAsyncHashCloseAtOnce(t *testing.T) {
	for range 100 {
		a := newAsyncHash(sha256.New())
		a.Write([]byte("x"))
		a.close()
	}
}

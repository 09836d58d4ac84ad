package archive

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestAsyncHash(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (3*hashBuffers*hashBufferSize)/16+7)
	for _, chunk := range []int{1 << 10, hashBufferSize - 1, hashBufferSize, hashBufferSize + 1, 3 * hashBufferSize, len(data)} {
		for _, size := range []int{0, 1, hashBufferSize, len(data)} {
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

// An extraction that fails early closes the hash before its goroutine
// has even started.
func TestAsyncHashCloseAtOnce(t *testing.T) {
	for range 100 {
		a := newAsyncHash(sha256.New())
		a.Write([]byte("x"))
		a.close()
	}
}

package archive

import "hash"

// Every buffer handed over can wake the hashing goroutine, and those
// wake-ups cost an upload more than the memory: 2 MiB buffers made the
// gateway's uploads markedly faster than 512 KiB ones (bench/upload;
// figures in bench/README.md), for 8 MiB per large upload. Buffers are made as they
// are needed, the first one small, so that the many small uploads of a
// CI burst do not each cost 8 MiB.
const (
	hashBuffers     = 4
	hashBufferSize  = 2 << 20
	firstHashBuffer = 64 << 10
)

// asyncHash feeds what is written to it to a hash on a goroutine of its
// own, so that hashing an upload overlaps with writing it to disk instead
// of adding to it: sha256 costs about as much CPU as the writes.
type asyncHash struct {
	h    hash.Hash
	cur  []byte
	full chan []byte // filled buffers, for the hashing goroutine
	free chan []byte // hashed buffers, to fill again
	done chan struct{}
	made int // buffers made so far
}

func newAsyncHash(h hash.Hash) *asyncHash {
	a := &asyncHash{
		h:    h,
		full: make(chan []byte, hashBuffers),
		free: make(chan []byte, hashBuffers),
		done: make(chan struct{}),
	}
	// The channels as they are now: close clears a.full.
	go func(full <-chan []byte, free chan<- []byte) {
		defer close(a.done)
		for b := range full {
			h.Write(b)
			free <- b[:0]
		}
	}(a.full, a.free)
	return a
}

func (a *asyncHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = a.next()
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur, p = a.cur[:len(a.cur)+k], p[k:]
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// next returns an empty buffer: a hashed one if there is one, else a new
// one while fewer than hashBuffers exist, else the next to be hashed.
func (a *asyncHash) next() []byte {
	select {
	case b := <-a.free:
		return b
	default:
	}
	if a.made < hashBuffers {
		size := hashBufferSize
		if a.made == 0 {
			size = firstHashBuffer
		}
		a.made++
		return make([]byte, 0, size)
	}
	return <-a.free
}

// Sum hashes what is left and returns the hash of everything written. It
// ends the goroutine; the asyncHash cannot be written to afterwards.
func (a *asyncHash) Sum() []byte {
	a.close()
	return a.h.Sum(nil)
}

// close ends the goroutine once it has hashed everything written. Safe to
// call more than once.
func (a *asyncHash) close() {
	if a.full == nil {
		return
	}
	if len(a.cur) > 0 {
		a.full <- a.cur
		a.cur = nil
	}
	close(a.full)
	a.full = nil
	<-a.done
}

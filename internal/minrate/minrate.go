// Package minrate bounds how slowly an HTTP request body may arrive, so
// that a client trickling bytes, or sending none, cannot hold its
// connection, and what its request holds, for as long as it likes.
package minrate

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Rate is the slowest a body may arrive: at least MinBytesPerSecond over
// every Window, and never a Window without a byte.
type Rate struct {
	MinBytesPerSecond int64
	Window            time.Duration
}

// Error is what a Reader returns once its body arrives slower than its
// Rate. The connection is closed after the answer.
type Error struct {
	// Stalled is set when no byte came for a whole window; otherwise
	// Bytes came in Elapsed, below the rate.
	Stalled bool
	Bytes   int64
	Elapsed time.Duration
	Rate    Rate
}

var _ error = (*Error)(nil)

func (e *Error) Error() string {
	if e.Stalled {
		return fmt.Sprintf("body stalled: no data for %s", e.Rate.Window)
	}
	return fmt.Sprintf("body too slow: %d bytes in %s, below %d bytes per second", e.Bytes, e.Elapsed.Round(time.Millisecond), e.Rate.MinBytesPerSecond)
}

// Reader reads a request body under a Rate. The idle bound is a read
// deadline on the connection, pushed back as data arrives; the rate is
// checked at the end of each window.
type Reader struct {
	r      io.Reader
	w      http.ResponseWriter
	rc     *http.ResponseController
	rate   Rate
	start  time.Time // of the current window
	n      int64     // bytes in the current window
	pushed time.Time // when the deadline was last pushed back
	done   bool      // the deadline is lifted or no longer pushed back
	cut    error     // the body was refused for its rate
}

// NewReader returns a Reader of r, the body of the request w answers,
// whose first window starts now. rate.Window must be positive; a zero
// rate.MinBytesPerSecond leaves only the bound on a silent window.
func NewReader(w http.ResponseWriter, r io.Reader, rate Rate) *Reader {
	b := &Reader{r: r, w: w, rc: http.NewResponseController(w), rate: rate, start: time.Now()}
	b.push(b.start)
	return b
}

func (b *Reader) push(now time.Time) {
	b.pushed = now
	// A writer without deadlines (a test recorder) keeps only the rate
	// check.
	b.rc.SetReadDeadline(now.Add(b.rate.Window))
}

// stop lifts the deadline at the body's end: net/http then reads the
// connection in the background, and a deadline there would cancel the
// request's context. Otherwise the deadline stays, so that reading what
// is left of a body after the handler (net/http does, to reuse the
// connection) is bounded too.
func (b *Reader) stop() {
	if !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
}

// tooSlow refuses the rest of the body. The connection is closed after
// the answer: net/http would otherwise try to read the rest of the body
// first.
func (b *Reader) tooSlow(e *Error) error {
	b.done = true
	b.w.Header().Set("Connection", "close")
	e.Rate = b.rate
	b.cut = e
	return e
}

func (b *Reader) Read(p []byte) (int, error) {
	if b.cut != nil {
		return 0, b.cut
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	now := time.Now()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, b.tooSlow(&Error{Stalled: true})
	case err == io.EOF:
		b.stop()
		return n, err
	case err != nil:
		return n, err
	}
	if elapsed := now.Sub(b.start); elapsed >= b.rate.Window {
		if want := int64(elapsed.Seconds() * float64(b.rate.MinBytesPerSecond)); b.n < want {
			return n, b.tooSlow(&Error{Bytes: b.n, Elapsed: elapsed})
		}
		b.start, b.n = now, 0
	}
	// Pushing the deadline back on every read would cost a timer update
	// per read; every eighth of a window keeps the idle bound within
	// 7/8 to 1 window.
	if n > 0 && !b.done && now.Sub(b.pushed) >= b.rate.Window/8 {
		b.push(now)
	}
	return n, nil
}

// SetBodyDeadline sets a read deadline d from now on the connection of
// r, if r declares a body: net/http reads what is left of a body under
// 256 KiB before it sends the answer, with no bound of its own, so a
// client could otherwise declare a body and never send it. Requests
// without one keep no deadline: net/http reads their connection in the
// background while the handler runs, and a deadline there would cancel
// the request. A zero d sets none; so does a writer without deadlines (a
// test recorder).
func SetBodyDeadline(w http.ResponseWriter, r *http.Request, d time.Duration) {
	if d > 0 && r.ContentLength != 0 {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
	}
}

// LiftOnRead returns r, whose first Read lifts the read deadline of the
// connection w answers on: a body without a bound of its own keeps
// SetBodyDeadline's until its reader starts on it, so that a request
// refused before (its rest then read by net/http) stays bounded.
func LiftOnRead(w http.ResponseWriter, r io.Reader) io.Reader {
	return &liftOnRead{r: r, w: w}
}

type liftOnRead struct {
	r      io.Reader
	w      http.ResponseWriter
	lifted bool
}

func (l *liftOnRead) Read(p []byte) (int, error) {
	if !l.lifted {
		l.lifted = true
		http.NewResponseController(l.w).SetReadDeadline(time.Time{})
	}
	return l.r.Read(p)
}

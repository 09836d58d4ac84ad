package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
)

// UploadRate is the slowest a request body may arrive: at least MinBytes
// in every Window, and never a Window without a byte. A zero MinBytes
// disables the bound.
type UploadRate struct {
	MinBytesPerSecond int64
	Window            time.Duration
}

// WithUploadRate cuts off request bodies that arrive slower than r with
// 408 TOO_SLOW, so that a client trickling bytes cannot hold a queue slot
// and a connection for as long as it likes. Default: no bound.
func WithUploadRate(r UploadRate) Option { return func(s *Server) { s.uploadRate = r } }

// WithBodyTimeout bounds how long the body of a request may take to
// arrive, from the start of the handler, unless it is an authenticated
// build upload (WithUploadRate bounds those). net/http reads what is left
// of a body under 256 KiB before it sends the answer: without a bound, a
// client that declares a body and never sends it holds its connection
// for good, authenticated or not.
// Default: no bound.
func WithBodyTimeout(d time.Duration) Option { return func(s *Server) { s.bodyTimeout = d } }

// bodyDeadline sets the read deadline of WithBodyTimeout on requests that
// declare a body. Those without one keep no deadline: net/http reads
// their connection in the background while the handler runs, and a
// deadline there would cancel the request, ending log streams.
func (s *Server) bodyDeadline(c *gin.Context) {
	if s.bodyTimeout > 0 && c.Request.ContentLength != 0 {
		// A writer without deadlines (a test recorder) keeps no bound.
		http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(s.bodyTimeout))
	}
	c.Next()
}

// rateBody reads a request body under an UploadRate. The idle bound is a
// read deadline on the connection, pushed back as data arrives; the rate
// is checked at the end of each window.
type rateBody struct {
	r      io.Reader
	w      http.ResponseWriter
	rc     *http.ResponseController
	rate   UploadRate
	start  time.Time // of the current window
	n      int64     // bytes in the current window
	pushed time.Time // when the deadline was last pushed back
	done   bool      // the deadline is lifted or no longer pushed back
	cut    error     // the upload was refused for its rate
}

func newRateBody(w http.ResponseWriter, r io.Reader, rate UploadRate) *rateBody {
	b := &rateBody{r: r, w: w, rc: http.NewResponseController(w), rate: rate, start: time.Now()}
	b.push(b.start)
	return b
}

func (b *rateBody) push(now time.Time) {
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
func (b *rateBody) stop() {
	if !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
}

// tooSlow refuses the rest of the upload. The connection is closed after
// the answer: net/http would otherwise try to read the rest of the body
// first.
func (b *rateBody) tooSlow(format string, args ...any) error {
	b.done = true
	b.w.Header().Set("Connection", "close")
	b.cut = &Error{Status: http.StatusRequestTimeout, Code: api.CodeTooSlow, Message: fmt.Sprintf(format, args...)}
	return b.cut
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.cut != nil {
		return 0, b.cut
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	now := time.Now()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, b.tooSlow("upload stalled: no data for %s (context.upload_rate_window)", b.rate.Window)
	case err == io.EOF:
		b.stop()
		return n, err
	case err != nil:
		return n, err
	}
	if elapsed := now.Sub(b.start); elapsed >= b.rate.Window {
		if want := int64(elapsed.Seconds() * float64(b.rate.MinBytesPerSecond)); b.n < want {
			return n, b.tooSlow("upload too slow: %d bytes in %s, below context.min_upload_bytes_per_second %d",
				b.n, elapsed.Round(time.Millisecond), b.rate.MinBytesPerSecond)
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

package server

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// WriteRate bounds how long the gateway writes to a client that stops
// reading: each write of an answer must complete within Window plus its
// size at MinBytesPerSecond, a download as a whole within Window plus
// its size, and each write of a log stream within Window. Without it,
// such a client holds its connection, and what its answer holds (its
// goroutine, the encoded answer, a log stream), for good.
type WriteRate struct {
	MinBytesPerSecond int64
	Window            time.Duration
}

// within is how long writing n bytes may take; zero for no bound.
func (r WriteRate) within(n int64) time.Duration {
	if r.Window <= 0 {
		return 0
	}
	d := r.Window
	if r.MinBytesPerSecond > 0 {
		d += time.Duration(float64(n) / float64(r.MinBytesPerSecond) * float64(time.Second))
	}
	return d
}

// WithWriteRate bounds the writes of every answer by r. Default: no
// bound.
func WithWriteRate(r WriteRate) Option { return func(s *Server) { s.writeRate = r } }

// boundedWriter sets the write deadline of its connection before each
// write of the answer, by its WriteRate, until the handler sets one
// itself (a download, a log stream): the bound is set where the answer
// is written, so that a handler may take as long as it needs before
// (an upload), and no answer, gin's own included, escapes it. The last
// deadline stays after the handler, over net/http's final flush; the
// next request on the connection sets its own.
type boundedWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	rate  WriteRate
	owned bool // the handler sets the deadline
}

// newBoundedWriter returns w bounded by rate, and lifts the write
// deadline a previous answer on the connection left: net/http may write
// before the answer (100 Continue).
func newBoundedWriter(w http.ResponseWriter, rate WriteRate) *boundedWriter {
	b := &boundedWriter{ResponseWriter: w, rc: http.NewResponseController(w), rate: rate}
	// A writer without deadlines (a test recorder) keeps no bound.
	b.rc.SetWriteDeadline(time.Time{})
	return b
}

func (w *boundedWriter) bound(n int) {
	if !w.owned {
		w.rc.SetWriteDeadline(time.Now().Add(w.rate.within(int64(n))))
	}
}

func (w *boundedWriter) WriteHeader(code int) {
	w.bound(0)
	w.ResponseWriter.WriteHeader(code)
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	w.bound(len(p))
	return w.ResponseWriter.Write(p)
}

func (w *boundedWriter) Flush() {
	w.bound(0)
	w.rc.Flush()
}

// SetWriteDeadline is how a handler takes over the bound
// (http.ResponseController finds it).
func (w *boundedWriter) SetWriteDeadline(t time.Time) error {
	w.owned = true
	return w.rc.SetWriteDeadline(t)
}

// Unwrap gives http.ResponseController the connection's other controls.
func (w *boundedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// deadlineWriter pushes the write deadline of its connection forward
// before each write and flush: a write in progress must complete within
// d, while a stream may stay idle between writes for as long as it
// likes.
type deadlineWriter struct {
	w  gin.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func newDeadlineWriter(w gin.ResponseWriter, d time.Duration) *deadlineWriter {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w), d: d}
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
	return w.w.Write(p)
}

func (w *deadlineWriter) Flush() {
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
	w.w.Flush()
}

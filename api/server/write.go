package server

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// WriteRate bounds how long the gateway writes to a client that stops
// reading: each write of a log stream must complete within Window, and
// a download within Window plus its size at MinBytesPerSecond. Without
// it, such a client holds its connection, and a log stream its
// goroutine, for good, even after its build ended.
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

// WithWriteRate bounds the writes of downloads and log streams by r.
// Default: no bound.
func WithWriteRate(r WriteRate) Option { return func(s *Server) { s.writeRate = r } }

// clearWriteDeadline lifts the write deadline a previous response on the
// connection left: a download or a log stream keeps its own until the
// end, so that net/http's final flush after the handler is bounded too.
func (s *Server) clearWriteDeadline(c *gin.Context) {
	if s.writeRate.Window > 0 {
		// A writer without deadlines (a test recorder) keeps no bound.
		http.NewResponseController(c.Writer).SetWriteDeadline(time.Time{})
	}
	c.Next()
}

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

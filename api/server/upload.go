package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/minrate"
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
// arrive, from when the Server gets it, unless it is an authenticated
// build upload (WithUploadRate bounds those). net/http reads what is left
// of a body under 256 KiB before it sends the answer: without a bound, a
// client that declares a body and never sends it holds its connection
// for good, authenticated or not.
// Default: no bound.
func WithBodyTimeout(d time.Duration) Option { return func(s *Server) { s.bodyTimeout = d } }

// rateBody reads a request body under an UploadRate, and turns its
// refusal into 408 TOO_SLOW naming the settings that bound it.
type rateBody struct{ r *minrate.Reader }

func newRateBody(w http.ResponseWriter, r io.Reader, rate UploadRate) rateBody {
	return rateBody{minrate.NewReader(w, r, minrate.Rate(rate))}
}

func (b rateBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	var me *minrate.Error
	switch {
	case !errors.As(err, &me):
		return n, err
	case me.Stalled:
		return n, errorf(http.StatusRequestTimeout, api.CodeTooSlow, fmt.Sprintf("upload stalled: no data for %s (context.upload_rate_window)", me.Rate.Window))
	default:
		return n, errorf(http.StatusRequestTimeout, api.CodeTooSlow, fmt.Sprintf("upload too slow: %d bytes in %s, below context.min_upload_bytes_per_second %d",
			me.Bytes, me.Elapsed.Round(time.Millisecond), me.Rate.MinBytesPerSecond))
	}
}

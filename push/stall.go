package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// StallError is a registry request that made no progress for the
// request timeout.
type StallError struct {
	Idle time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("no progress for %s (push.request_timeout)", e.Idle)
}

// Timeout and Temporary make a stall a net.Error, retried like one.
func (e *StallError) Timeout() bool   { return true }
func (e *StallError) Temporary() bool { return true }

// stallTransport ends a request that goes idle longer than idle: no
// answer yet, no byte of the request body taken, or no byte of the answer
// body arriving.
type stallTransport struct {
	next http.RoundTripper
	idle time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	stall := &StallError{Idle: t.idle}
	timer := time.AfterFunc(t.idle, func() { cancel(stall) })
	kick := func() { timer.Reset(t.idle) }
	done := func() { timer.Stop(); cancel(nil) }
	// failed says a stall when that is why err happened.
	failed := func(err error) error {
		if errors.Is(context.Cause(ctx), stall) && !errors.Is(err, stall) {
			return fmt.Errorf("%w: %w", stall, err)
		}
		return err
	}

	req = req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &progressBody{ReadCloser: req.Body, kick: kick}
		if gb := req.GetBody; gb != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				b, err := gb()
				if err != nil || b == http.NoBody {
					return b, err
				}
				return &progressBody{ReadCloser: b, kick: kick}, nil
			}
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		done()
		return nil, failed(err)
	}
	kick()
	resp.Body = &progressBody{ReadCloser: resp.Body, kick: kick, failed: failed, done: done}
	return resp, nil
}

// progressBody kicks the stall timer on every read that returns bytes.
type progressBody struct {
	io.ReadCloser
	kick   func()
	failed func(error) error
	done   func()
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.kick()
	}
	if err != nil && err != io.EOF && b.failed != nil {
		err = b.failed(err)
	}
	return n, err
}

func (b *progressBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done != nil {
		b.done()
	}
	return err
}

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/minrate"
)

// drain is the API while the gateway shuts down: after SIGTERM it still
// answers status and log reads, and cancels, while running builds get
// their grace period, but refuses new builds and reports not ready; once
// the builds are over, log streams end with a line that says how to
// reattach, so that the server can close without cutting them off.
type drain struct {
	next http.Handler
	// ended reports whether a build is over; a stream of one that is not
	// always ends saying how to reattach once the gateway drains.
	ended func(id string) bool
	// bodyTimeout bounds the unread body of a submission refused while
	// draining, as the API's request_body_timeout does.
	bodyTimeout time.Duration
	draining    atomic.Bool
	closing     chan struct{} // closed when log streams are to end
}

func newDrain(next http.Handler, ended func(id string) bool, bodyTimeout time.Duration) *drain {
	return &drain{next: next, ended: ended, bodyTimeout: bodyTimeout, closing: make(chan struct{})}
}

// start refuses new builds from now on.
func (d *drain) start() { d.draining.Store(true) }

// closeStreams ends the log streams.
func (d *drain) closeStreams() { close(d.closing) }

func (d *drain) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !d.draining.Load() {
		if isFollow(r) {
			d.follow(w, r)
			return
		}
		d.next.ServeHTTP(w, r)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/builds":
		w.Header().Set("Retry-After", "30")
		// The API's body deadline is not set on this path, and net/http
		// reads what is left of a small body before sending the answer.
		minrate.SetBodyDeadline(w, r, d.bodyTimeout)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "gateway shutting down: submit again to the next one")
	case r.URL.Path == "/readyz":
		d.readyz(w, r)
	case isFollow(r):
		d.follow(w, r)
	default:
		d.next.ServeHTTP(w, r)
	}
}

// readyz answers /readyz while the gateway drains: the shape of the
// API's answer, with its checks, but not ready and shutting down.
func (d *drain) readyz(w http.ResponseWriter, r *http.Request) {
	rec := &bufferedResponse{header: http.Header{}}
	d.next.ServeHTTP(rec, r)
	var res api.Readiness
	if json.Unmarshal(rec.body.Bytes(), &res) != nil || res.Runners == nil {
		// The check's caller left, say: the checks are unknown.
		res = api.Readiness{Runners: map[string]string{}, Store: "unavailable"}
	}
	res.Ready, res.ShuttingDown = false, true
	res.Failing = append(res.Failing, "shutting_down")
	slices.Sort(res.Failing)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	json.NewEncoder(w).Encode(res)
}

// bufferedResponse keeps what a handler answers, for drain to rewrite.
type bufferedResponse struct {
	header http.Header
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferedResponse) WriteHeader(int)             {}

// isFollow reports a GET /v1/builds/{id}/logs?follow=1 request.
func isFollow(r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/builds/") || !strings.HasSuffix(r.URL.Path, "/logs") {
		return false
	}
	f := r.URL.Query().Get("follow")
	return f == "1" || f == "true"
}

// follow serves a log stream that ends, with a last line, when the
// streams close.
func (d *drain) follow(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	closed := make(chan struct{})
	go func() {
		select {
		case <-d.closing:
			close(closed)
			cancel()
		case <-ctx.Done():
		}
	}()
	// The trailer says where the log stands, since the line below is not
	// part of it: a client resumes from there.
	w.Header().Set("Trailer", api.LogOffsetTrailer)
	cw := &countingWriter{ResponseWriter: w}
	d.next.ServeHTTP(cw, r.WithContext(ctx))
	if cw.status != http.StatusOK {
		return
	}
	offset, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/builds/"), "/logs")
	// A stream that ended while the gateway drains, of a build that is not
	// over (its log closed with the Manager, or a client that reattached
	// to this gateway before it closed), says so too, lest the client
	// take the end of the stream for the end of the build.
	ended := false
	select {
	case <-closed:
	default:
		ended = !d.draining.Load() || d.ended(id)
	}
	if !ended && r.Context().Err() == nil {
		fmt.Fprintf(w, "#buildgw gateway shutting down; reattach with: buildctl-lite logs -f %s (or GET %s?follow=1&offset=%d)\n", id, r.URL.Path, offset+cw.n)
	}
	w.Header().Set(api.LogOffsetTrailer, strconv.FormatInt(offset+cw.n, 10))
}

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	var b api.ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	json.NewEncoder(w).Encode(b)
}

package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/buildgw/buildgw/api"
)

// drain is the API while the gateway shuts down: after SIGTERM it still
// answers status and log reads, and cancels, while running builds get
// their grace period, but refuses new builds and reports not ready; once
// the builds are over, log streams end with a line that says how to
// reattach, so that the server can close without cutting them off.
type drain struct {
	next     http.Handler
	draining atomic.Bool
	closing  chan struct{} // closed when log streams are to end
}

func newDrain(next http.Handler) *drain {
	return &drain{next: next, closing: make(chan struct{})}
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
		writeError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "gateway shutting down: submit again to the next one")
	case r.URL.Path == "/readyz":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]any{"ready": false, "shutting_down": true})
	case isFollow(r):
		d.follow(w, r)
	default:
		d.next.ServeHTTP(w, r)
	}
}

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
	select {
	case <-closed:
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/builds/"), "/logs")
		fmt.Fprintf(w, "#buildgw gateway shutting down; reattach with: buildctl-lite logs -f %s (or GET %s?follow=1&offset=%d)\n", id, r.URL.Path, offset+cw.n)
	default: // ended by itself: the build ended, or the client left
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

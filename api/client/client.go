// Package client is a Go client of buildgw's HTTP API, v1. Requests are
// retried on connection failures and 5xx answers; a submit carries an
// Idempotency-Key so that a retry never starts a second build. A full
// queue (429) is waited out as its Retry-After header says. A gateway that
// cannot be reached or is shutting down is waited out for the restart
// wait, both by a submit and by a followed log.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/buildgw/buildgw/api"
)

// Error is an error answer of the server.
type Error struct {
	StatusCode int
	Code       string
	Message    string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return e.Message
}

var _ error = (*Error)(nil)

// Client talks to one gateway.
type Client struct {
	base      *url.URL
	token     string
	http      *retryablehttp.Client
	queueWait time.Duration
	onWait    func(d time.Duration, reason string)
	// restartWait bounds how long Logs waits for an unreachable gateway.
	restartWait time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithRetries sets how often a failed request is retried and the first
// wait. Default 4 retries starting at 500ms, doubling up to 8s.
func WithRetries(n int, minWait time.Duration) Option {
	return func(c *Client) {
		c.http.RetryMax = n
		c.http.RetryWaitMin = minWait
	}
}

// WithQueueWait bounds how long requests refused with 429 (the gateway's
// queue is full) are retried, each after the wait the answer's
// Retry-After asks for. Default 30 minutes; 0: no waiting.
func WithQueueWait(d time.Duration) Option {
	return func(c *Client) { c.queueWait = d }
}

// WithRestartWait bounds how long a submit (its upload) and a followed log
// (Logs, and so a submit that waits for its build) wait for a gateway that
// cannot be reached or answers 502, 503 or 504, as during a restart,
// before they give up. A submit sends the whole context again with the
// same Idempotency-Key (and also after a 408); a followed log reattaches
// to the build by its ID where the log left off. Each wait is told to
// WithWaitNotice. Default 3 minutes; 0: no waiting, only the request's
// few quick retries (WithRetries).
func WithRestartWait(d time.Duration) Option {
	return func(c *Client) { c.restartWait = d }
}

// WithWaitNotice calls f before each wait for a full queue, with the wait
// and the gateway's message, so a CLI can say why it pauses. Default none.
func WithWaitNotice(f func(d time.Duration, reason string)) Option {
	return func(c *Client) { c.onWait = f }
}

// WithHTTPClient sets the underlying client (for TLS settings). Default
// a clone of http.DefaultTransport.
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) { c.http.HTTPClient = h }
}

// New returns a Client of the gateway at server with a bearer token.
func New(server, token string, opts ...Option) (*Client, error) {
	if server == "" {
		return nil, errors.New("no server given (set --server or BUILDGW_URL)")
	}
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an http(s) URL", server)
	}
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.RetryMax = 4
	rc.RetryWaitMin = 500 * time.Millisecond
	rc.RetryWaitMax = 8 * time.Second
	// Hand the last answer back instead of a generic "giving up" error, so
	// the caller sees the server's message.
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	// A full queue is not a failure to retry a few times quickly: send
	// waits it out on its own schedule.
	rc.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if err == nil && resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			return false, nil
		}
		// The context could not be read here: another attempt would fail
		// the same way.
		if le, ok := ctx.Value(localErrKey{}).(*localErr); ok && le.get() != nil {
			return false, le.get()
		}
		retry, cerr := retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		if away, ok := ctx.Value(awayKey{}).(*atomic.Bool); ok && retry && ctx.Err() == nil {
			if resp == nil || resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
				away.Store(true)
				return false, nil
			}
		}
		return retry, cerr
	}
	c := &Client{base: u, token: token, http: rc, queueWait: 30 * time.Minute, restartWait: 3 * time.Minute}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// WithToken returns a copy of c that sends token instead of c's own: a
// build's read token (api.Accepted.ReadToken), say, which keeps working
// for that build after the credentials that submitted it have expired.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.token = token
	return &cc
}

// Progress is called with the number of context bytes read so far.
type Progress func(n int64)

// Submit uploads a build. newContext returns a fresh reader of the context
// archive for each attempt (the archive is streamed, never held whole), so
// a gateway away for up to the restart wait is waited out and the
// context sent again; it must give the same bytes every time.
func (c *Client) Submit(ctx context.Context, spec api.BuildSpec, newContext func() io.ReadCloser, progress Progress) (*api.Accepted, error) {
	key, err := NewIdempotencyKey()
	if err != nil {
		return nil, err
	}
	return c.SubmitWithKey(ctx, key, spec, newContext, progress)
}

// SubmitWithKey is Submit with the Idempotency-Key given: sent again with
// the same key, a submission returns the build the first one started,
// unless a gateway restart interrupted that build (api.Build.Interrupted);
// then it starts a new one.
func (c *Client) SubmitWithKey(ctx context.Context, key string, spec api.BuildSpec, newContext func() io.ReadCloser, progress Progress) (*api.Accepted, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encoding spec: %w", err)
	}
	local := &localErr{}
	// Every attempt must use the boundary named in the Content-Type.
	boundary := multipart.NewWriter(io.Discard).Boundary()
	contentType := "multipart/form-data; boundary=" + boundary
	// retryablehttp calls body once when the request is made, only to probe
	// its length, and once more per attempt. The stream (and newContext)
	// starts on the first Read, so the probe opens no context and progress
	// is never called from two goroutines at once.
	body := func() (io.Reader, error) {
		return &lazyBody{start: func() *io.PipeReader {
			pr, pw := io.Pipe()
			mw := multipart.NewWriter(pw)
			if err := mw.SetBoundary(boundary); err != nil {
				pw.CloseWithError(err)
				return pr
			}
			go func() {
				pw.CloseWithError(writeMultipart(mw, specJSON, &recordingReader{r: newContext(), rec: local}, progress))
			}()
			return pr
		}}, nil
	}
	var o outage
	for {
		// A gateway that is away is waited out here, not by the request's
		// own few quick retries, for as long as WithRestartWait allows.
		var away atomic.Bool
		actx := context.WithValue(ctx, localErrKey{}, local)
		if c.restartWait > 0 {
			actx = context.WithValue(actx, awayKey{}, &away)
		}
		req, err := c.newRequest(actx, http.MethodPost, "/v1/builds", retryablehttp.ReaderFunc(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set(api.IdempotencyKeyHeader, key)
		var acc api.Accepted
		err = c.do(req, http.StatusAccepted, &acc)
		if err == nil {
			return &acc, nil
		}
		if lerr := local.get(); lerr != nil {
			// Not the network's fault: say what was wrong here.
			return nil, lerr
		}
		var e *Error
		if !away.Load() && !(errors.As(err, &e) && e.StatusCode == http.StatusRequestTimeout && c.restartWait > 0) {
			return nil, err
		}
		// The same key each time: a submission the gateway accepted but
		// whose answer was lost returns that build instead of a new one.
		if werr := c.waitOut(ctx, &o, err); werr != nil {
			return nil, werr
		}
	}
}

// outage is how long a gateway has been away and the next pause.
type outage struct {
	since time.Time
	wait  time.Duration
}

// maxOutageWait bounds one pause between attempts, before its jitter.
const maxOutageWait = 10 * time.Second

// waitOut pauses before the next attempt of a request that found the
// gateway away with err: a second at first, doubling to 10s, each with up
// to half again of random jitter, so that clients of a restarted gateway
// do not come back all at once. It returns an error naming the gateway
// and the time waited once the restart wait is spent, or ctx's error.
func (c *Client) waitOut(ctx context.Context, o *outage, err error) error {
	if o.since.IsZero() {
		o.since, o.wait = time.Now(), time.Second
	}
	waited := time.Since(o.since)
	left := c.restartWait - waited
	if left <= 0 {
		return &UnreachableError{Server: c.base.Redacted(), Waited: waited, Err: err}
	}
	d := o.wait + time.Duration(mathrand.Int64N(int64(o.wait)/2+1))
	if left-d < time.Second {
		// The last try comes when the wait is spent, not a moment before.
		d = left
	}
	o.wait = min(2*o.wait, maxOutageWait)
	if c.onWait != nil {
		c.onWait(d, fmt.Sprintf("buildgw unreachable (%s); retrying for up to %s", awayReason(err), left.Round(time.Second)))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// UnreachableError is a submission given up because the gateway stayed
// away (no connection, 502, 503 or 504) for the whole restart wait.
type UnreachableError struct {
	Server string
	Waited time.Duration
	// Err is the last attempt's error.
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("buildgw at %s still unreachable after %s (%s)", e.Server, e.Waited.Round(time.Second), awayReason(e.Err))
}

func (e *UnreachableError) Unwrap() error { return e.Err }

var _ error = (*UnreachableError)(nil)

// awayReason says briefly why the gateway is away: the refused or broken
// connection, or its answer.
func awayReason(err error) string {
	var e *Error
	switch {
	case errors.As(err, &e):
		if e.Message == "" {
			return e.Error()
		}
		return fmt.Sprintf("%d: %s", e.StatusCode, e.Message)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before an answer"
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

// awayKey holds an *atomic.Bool in a request's context: set when the
// request found the gateway away (no connection, or 502, 503 or 504), which
// its caller then waits out instead of the request's quick retries.
type awayKey struct{}

func writeMultipart(mw *multipart.Writer, spec []byte, ctxArchive io.ReadCloser, progress Progress) error {
	defer ctxArchive.Close()
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="spec"; filename="spec.json"`)
	h.Set("Content-Type", "application/json")
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(spec); err != nil {
		return err
	}
	h = textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="context"; filename="context.tar.gz"`)
	h.Set("Content-Type", "application/octet-stream")
	if w, err = mw.CreatePart(h); err != nil {
		return err
	}
	var r io.Reader = ctxArchive
	if progress != nil {
		progress(0)
		r = &countingReader{r: r, f: progress}
	}
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	return mw.Close()
}

// lazyBody is one attempt's request body. It starts producing the stream
// when it is first read, and never after it is closed.
type lazyBody struct {
	start func() *io.PipeReader

	mu     sync.Mutex
	pr     *io.PipeReader
	closed bool
}

func (b *lazyBody) reader() (*io.PipeReader, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, io.ErrClosedPipe
	}
	if b.pr == nil {
		b.pr = b.start()
	}
	return b.pr, nil
}

func (b *lazyBody) Read(p []byte) (int, error) {
	r, err := b.reader()
	if err != nil {
		return 0, err
	}
	return r.Read(p)
}

// Close stops the stream's writer, if it was started.
func (b *lazyBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.pr != nil {
		return b.pr.Close()
	}
	return nil
}

// localErr is the first error reading the context archive met, which is
// this side's problem, not the network's.
type localErr struct {
	mu  sync.Mutex
	err error
}

type localErrKey struct{}

func (l *localErr) set(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *localErr) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// recordingReader notes r's errors other than EOF in rec.
type recordingReader struct {
	r   io.ReadCloser
	rec *localErr
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.rec.set(err)
	}
	return n, err
}

func (r *recordingReader) Close() error { return r.r.Close() }

type countingReader struct {
	r io.Reader
	n int64
	f Progress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.f(c.n)
	return n, err
}

// Get returns a build's state.
func (c *Client) Get(ctx context.Context, id string) (*api.Build, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/builds/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	var b api.Build
	if err := c.do(req, http.StatusOK, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// List returns the caller's builds, newest first.
func (c *Client) List(ctx context.Context) ([]api.Build, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/builds", nil)
	if err != nil {
		return nil, err
	}
	var l api.BuildList
	if err := c.do(req, http.StatusOK, &l); err != nil {
		return nil, err
	}
	return l.Builds, nil
}

// Version returns the gateway's version; it needs no token.
func (c *Client) Version(ctx context.Context) (*api.Version, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/version", nil)
	if err != nil {
		return nil, err
	}
	var v api.Version
	if err := c.do(req, http.StatusOK, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Cancel asks the gateway to stop a build and returns its state after.
func (c *Client) Cancel(ctx context.Context, id string) (*api.Build, error) {
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/builds/"+url.PathEscape(id)+"/cancel", nil)
	if err != nil {
		return nil, err
	}
	var b api.Build
	if err := c.do(req, http.StatusAccepted, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// Logs copies a build's log to w. With follow it returns when the build
// has ended, resuming where it left off if the stream breaks, and waiting
// out a gateway restart (WithRestartWait).
func (c *Client) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	var off int64
	var down time.Time // since when the gateway cannot be reached
	wait := time.Second
	// unreachable waits before the next try and reports true while err is
	// a gateway away for less than the restart wait.
	unreachable := func(err error) bool {
		if !follow || !gatewayAway(err) {
			return false
		}
		if down.IsZero() {
			down = time.Now()
			wait = time.Second
		}
		if time.Since(down)+wait > c.restartWait {
			return false
		}
		if c.onWait != nil {
			c.onWait(wait, fmt.Sprintf("gateway unreachable (%v); waiting up to %s for it to come back, then reattaching to build %s", err, c.restartWait.Round(time.Second), id))
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
		wait = min(2*wait, 10*time.Second)
		return true
	}
	for {
		q := "?offset=" + strconv.FormatInt(off, 10)
		if follow {
			q += "&follow=1"
		}
		req, err := c.newRequest(ctx, http.MethodGet, "/v1/builds/"+url.PathEscape(id)+"/logs"+q, nil)
		if err != nil {
			return err
		}
		resp, err := c.send(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = decodeError(resp)
			resp.Body.Close()
		}
		if err != nil {
			if unreachable(err) {
				continue
			}
			if _, ok := err.(*Error); ok {
				return err
			}
			return c.wrap(err)
		}
		down = time.Time{}
		n, cerr := io.Copy(w, resp.Body)
		resp.Body.Close()
		// A gateway that shuts down ends the stream with a line that is
		// not part of the log, and says in the trailer where the log is.
		if v, err := strconv.ParseInt(resp.Trailer.Get(api.LogOffsetTrailer), 10, 64); cerr == nil && err == nil && v >= off {
			off = v
		} else {
			off += n
		}
		if !follow {
			return cerr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The server ends a followed stream when the build ends; a break
		// before that is a network hiccup or a restart: check and resume.
		b, err := c.Get(ctx, id)
		if err != nil {
			if unreachable(err) {
				continue
			}
			return err
		}
		if b.Status.Final() && cerr == nil {
			return nil
		}
	}
}

// gatewayAway reports whether err says the gateway is not there for the
// moment: no connection, or 502, 503 or 504 from a proxy or a gateway
// shutting down.
func gatewayAway(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode == http.StatusBadGateway || e.StatusCode == http.StatusServiceUnavailable || e.StatusCode == http.StatusGatewayTimeout
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*retryablehttp.Request, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("making request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send does req, and does it again after the wait a 429 answer asks for,
// until the queue-wait budget would be exceeded.
func (c *Client) send(req *retryablehttp.Request) (*http.Response, error) {
	deadline := time.Now().Add(c.queueWait)
	for {
		resp, err := c.http.Do(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			return resp, err
		}
		wait := retryAfter(resp.Header.Get("Retry-After"), c.http.RetryWaitMin)
		if time.Now().Add(wait).After(deadline) {
			return resp, nil
		}
		reason := ""
		if e, ok := decodeError(resp).(*Error); ok {
			reason = e.Message
		}
		resp.Body.Close()
		if c.onWait != nil {
			c.onWait(wait, reason)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return nil, req.Context().Err()
		}
	}
}

// retryAfter reads a Retry-After header in seconds (the gateway never
// sends the date form), falling back to def.
func retryAfter(h string, def time.Duration) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return def
}

func (c *Client) do(req *retryablehttp.Request, want int, out any) error {
	resp, err := c.send(req)
	if err != nil {
		return c.wrap(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return decodeError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding answer of %s: %w", c.base.Redacted(), err)
	}
	return nil
}

func (c *Client) wrap(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("cannot reach buildgw at %s: %w", c.base.Redacted(), err)
}

func decodeError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode}
	var body api.ErrorBody
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	return e
}

// NewIdempotencyKey returns a random Idempotency-Key.
func NewIdempotencyKey() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making idempotency key: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

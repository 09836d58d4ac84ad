package client_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/api/server"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
)

const token = "client-test-token"

// gw is a real server.Server over a real Manager with the kaniko runner.
type gw struct {
	srv *server.Server
	m   *jobs.Manager
	reg string
}

func newGateway(t *testing.T) *gw {
	t.Helper()
	te := testmanager.New(t, testmanager.Options{})
	m, reg := te.M, te.Registry
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	return &gw{srv: server.New(m, auth, nil), m: m, reg: reg}
}

func (g *gw) dest(repo string) string { return g.reg + "/test/" + repo + ":v1" }

// serve serves h (the gateway, or a wrapper of it) on loopback.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func newClient(t *testing.T, url, tok string) *client.Client {
	t.Helper()
	c, err := client.New(url, tok, client.WithRetries(3, 10*time.Millisecond))
	if err != nil {
		t.Fatalf("client.New(%q) = %v", url, err)
	}
	return c
}

func contextTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range []string{"Dockerfile", "hello.txt"} {
		body, ok := files[n]
		if !ok {
			continue
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)})
		io.WriteString(tw, body)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

var scratchFiles = map[string]string{
	"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n",
	"hello.txt":  "hello from the client test\n",
}

// contextFunc returns a newContext for Submit that counts its calls.
func contextFunc(b []byte, calls *atomic.Int32) func() io.ReadCloser {
	return func() io.ReadCloser {
		calls.Add(1)
		return io.NopCloser(bytes.NewReader(b))
	}
}

// progressRecorder is deliberately not safe for concurrent use: the race
// detector flags a client that calls it from two goroutines at once.
type progressRecorder struct{ last, calls int64 }

func (p *progressRecorder) f(n int64) { p.last, p.calls = n, p.calls+1 }

func TestClientLifecycle(t *testing.T) {
	g := newGateway(t)
	url := serve(t, g.srv)
	c := newClient(t, url, token)
	ctx := context.Background()
	archive := contextTar(t, scratchFiles)
	dest := g.dest("lifecycle")

	var calls atomic.Int32
	var prog progressRecorder
	acc, err := c.Submit(ctx, api.BuildSpec{Destinations: []string{dest}}, contextFunc(archive, &calls), prog.f)
	if err != nil {
		t.Fatalf("Submit(%q) = %v, want no error", dest, err)
	}
	if acc.ID == "" || acc.StatusURL != "/v1/builds/"+acc.ID {
		t.Errorf("Submit(%q) = %+v, want an id and its status URL", dest, acc)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Submit(%q) opened the context %d times for one attempt, want 1", dest, n)
	}
	if prog.last != int64(len(archive)) {
		t.Errorf("Submit(%q) last progress = %d, want %d", dest, prog.last, len(archive))
	}

	var logs bytes.Buffer
	if err := c.Logs(ctx, acc.ID, true, &logs); err != nil {
		t.Fatalf("Logs(%q, follow) = %v", acc.ID, err)
	}
	// Following returns only when the build has ended.
	b, err := c.Get(ctx, acc.ID)
	if err != nil {
		t.Fatalf("Get(%q) = %v", acc.ID, err)
	}
	if b.Status != api.StatusSucceeded {
		t.Fatalf("Get(%q) after Logs(follow) = %v (%q), want %v", acc.ID, b.Status, b.Error, api.StatusSucceeded)
	}
	ref, _ := name.ParseReference(dest)
	desc, err := remote.Head(ref)
	if err != nil || desc.Digest.String() != b.Digest {
		t.Errorf("registry digest of %s = %v (%v), want the build's %v", dest, desc, err, b.Digest)
	}
	for _, want := range []string{"#buildgw accepted", "COPY hello.txt", "#buildgw pushed " + b.Digest} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("Logs(%q, follow) lacks %q:\n%s", acc.ID, want, logs.String())
		}
	}
	var again bytes.Buffer
	if err := c.Logs(ctx, acc.ID, false, &again); err != nil || again.String() != logs.String() {
		t.Errorf("Logs(%q, no follow) = %q, %v, want the followed log", acc.ID, again.String(), err)
	}

	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != acc.ID {
		t.Errorf("List() = %v, %v, want just %s", list, err, acc.ID)
	}
}

func TestClientCancel(t *testing.T) {
	g := newGateway(t)
	url := serve(t, g.srv)
	c := newClient(t, url, token)
	ctx := context.Background()
	base := testenv.Busybox(t, g.reg)
	archive := contextTar(t, map[string]string{"Dockerfile": "FROM " + base + "\nRUN sleep 30\n"})
	var calls atomic.Int32
	acc, err := c.Submit(ctx, api.BuildSpec{Destinations: []string{g.dest("cancel")}}, contextFunc(archive, &calls), nil)
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	deadline := time.Now().Add(testenv.Scale(time.Minute))
	for {
		var l bytes.Buffer
		if err := c.Logs(ctx, acc.ID, false, &l); err != nil {
			t.Fatalf("Logs(%q) = %v", acc.ID, err)
		}
		if strings.Contains(l.String(), "sleep 30") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s never started its RUN step:\n%s", acc.ID, l.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := c.Cancel(ctx, acc.ID)
	if err != nil || b.Status != api.StatusCancelled {
		t.Fatalf("Cancel(%q) = %+v, %v, want status %v", acc.ID, b, err, api.StatusCancelled)
	}
	_, err = c.Cancel(ctx, acc.ID)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusConflict || ce.Code != api.CodeConflict {
		t.Errorf("second Cancel(%q) = %v, want a *client.Error 409 %s", acc.ID, err, api.CodeConflict)
	}
}

func TestClientErrors(t *testing.T) {
	g := newGateway(t)
	url := serve(t, g.srv)
	good := newClient(t, url, token)
	bad := newClient(t, url, "wrong-token")
	ctx := context.Background()
	archive := contextTar(t, scratchFiles)
	var calls atomic.Int32

	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		wantCode   string
		wantIn     string
	}{
		{"wrong token", func() error { _, err := bad.List(ctx); return err }, http.StatusUnauthorized, api.CodeUnauthorized, "invalid token"},
		{"unknown build", func() error { _, err := good.Get(ctx, "nosuchbuild"); return err }, http.StatusNotFound, api.CodeNotFound, "not found"},
		{"cancel unknown build", func() error { _, err := good.Cancel(ctx, "nosuchbuild"); return err }, http.StatusNotFound, api.CodeNotFound, "not found"},
		{"logs of unknown build", func() error { return good.Logs(ctx, "nosuchbuild", true, io.Discard) }, http.StatusNotFound, api.CodeNotFound, "not found"},
		{"id with a slash", func() error { _, err := good.Get(ctx, "../builds"); return err }, http.StatusNotFound, api.CodeNotFound, ""},
		{"invalid spec", func() error {
			_, err := good.Submit(ctx, api.BuildSpec{Destinations: []string{"busybox"}}, contextFunc(archive, &calls), nil)
			return err
		}, http.StatusBadRequest, api.CodeInvalidSpec, "registry and tag"},
		{"missing Dockerfile", func() error {
			_, err := good.Submit(ctx, api.BuildSpec{Destinations: []string{g.dest("x")}, Dockerfile: "other/Dockerfile"}, contextFunc(archive, &calls), nil)
			return err
		}, http.StatusBadRequest, api.CodeInvalidContext, "other/Dockerfile"},
		{"not an archive", func() error {
			_, err := good.Submit(ctx, api.BuildSpec{Destinations: []string{g.dest("x")}}, contextFunc([]byte("definitely not a tarball, not even close to one"), &calls), nil)
			return err
		}, http.StatusBadRequest, api.CodeInvalidContext, "context"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%s = %v (%T), want a *client.Error", tc.name, err, err)
			}
			if ce.StatusCode != tc.wantStatus || ce.Code != tc.wantCode || !strings.Contains(ce.Message, tc.wantIn) {
				t.Errorf("%s = %d %s %q, want %d %s with %q", tc.name, ce.StatusCode, ce.Code, ce.Message, tc.wantStatus, tc.wantCode, tc.wantIn)
			}
			if ce.Error() == "" {
				t.Errorf("%s: Error() is empty", tc.name)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		server  string
		wantErr bool
	}{
		{"", true},
		{"ftp://example.com", true},
		{"example.com:8080", true},
		{"http://", true},
		{"http://127.0.0.1:8080", false},
		{"https://buildgw.example.com/", false},
	}
	for _, tc := range tests {
		_, err := client.New(tc.server, token)
		if (err != nil) != tc.wantErr {
			t.Errorf("New(%q) = %v, want error %v", tc.server, err, tc.wantErr)
		}
	}
}

// loseFirstSubmit lets the first POST /v1/builds through to the gateway,
// then drops the connection instead of answering: the build exists, but
// the client never heard of it.
type loseFirstSubmit struct {
	h      http.Handler
	posts  atomic.Int32
	mu     sync.Mutex
	keys   []string
	status int // the answer that was lost
}

func (l *loseFirstSubmit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/builds" {
		l.h.ServeHTTP(w, r)
		return
	}
	l.mu.Lock()
	l.keys = append(l.keys, r.Header.Get(api.IdempotencyKeyHeader))
	l.mu.Unlock()
	if l.posts.Add(1) > 1 {
		l.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	l.h.ServeHTTP(rec, r)
	l.status = rec.Code
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

func TestClientRetryAfterLostResponse(t *testing.T) {
	g := newGateway(t)
	lose := &loseFirstSubmit{h: g.srv}
	c := newClient(t, serve(t, lose), token)
	ctx := context.Background()
	var calls atomic.Int32
	acc, err := c.Submit(ctx, api.BuildSpec{Destinations: []string{g.dest("retry")}}, contextFunc(contextTar(t, scratchFiles), &calls), nil)
	if err != nil {
		t.Fatalf("Submit through a connection that drops the first answer = %v, want success", err)
	}
	if lose.status != http.StatusAccepted {
		t.Fatalf("the first attempt got %d from the gateway, want 202 (the test must lose an accepted build)", lose.status)
	}
	if n := lose.posts.Load(); n != 2 {
		t.Errorf("Submit sent %d POSTs, want 2 (one lost, one retried)", n)
	}
	if lose.keys[0] == "" || lose.keys[0] != lose.keys[1] {
		t.Errorf("Submit idempotency keys = %q, want one non-empty key repeated", lose.keys)
	}
	list, err := c.List(ctx)
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	if len(list) != 1 || list[0].ID != acc.ID {
		t.Fatalf("List() after a retried submit = %v, want exactly the build %s", list, acc.ID)
	}
	var logs bytes.Buffer
	if err := c.Logs(ctx, acc.ID, true, &logs); err != nil {
		t.Fatalf("Logs(%q) = %v", acc.ID, err)
	}
	if b, err := c.Get(ctx, acc.ID); err != nil || b.Status != api.StatusSucceeded {
		t.Errorf("Get(%q) = %+v, %v, want %v", acc.ID, b, err, api.StatusSucceeded)
	}
}

// unavailable answers the first n API requests 503 without passing them
// on.
type unavailable struct {
	h    http.Handler
	n    int32
	seen atomic.Int32
}

func (u *unavailable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u.seen.Add(1) <= u.n {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeUnavailable, Message: "gateway is restarting"}})
		return
	}
	u.h.ServeHTTP(w, r)
}

func TestClientRetry503(t *testing.T) {
	g := newGateway(t)
	ctx := context.Background()
	archive := contextTar(t, scratchFiles)
	tests := []struct {
		name       string
		failures   int32
		wantErr    bool
		wantTries  int32
		wantBuilds int
	}{
		{"503 then OK", 1, false, 2, 1},
		{"503 twice then OK", 2, false, 3, 1},
		{"503 more often than retried", 100, true, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := &unavailable{h: g.srv, n: tc.failures}
			// Without a restart wait, only the request's own retries: a
			// gateway away for longer is waited out in the cmd package's
			// tests.
			c, err := client.New(serve(t, u), token, client.WithRetries(3, 10*time.Millisecond), client.WithRestartWait(0))
			if err != nil {
				t.Fatal(err)
			}
			before := len(g.m.List("ci"))
			var calls atomic.Int32
			acc, err := c.Submit(ctx, api.BuildSpec{Destinations: []string{g.dest("flaky")}}, contextFunc(archive, &calls), nil)
			if got := u.seen.Load(); got != tc.wantTries {
				t.Errorf("Submit(%s) made %d attempts, want %d", tc.name, got, tc.wantTries)
			}
			if n := calls.Load(); n > tc.wantTries {
				t.Errorf("Submit(%s) opened the context %d times for %d attempts", tc.name, n, tc.wantTries)
			}
			if got := len(g.m.List("ci")) - before; got != tc.wantBuilds {
				t.Errorf("Submit(%s) created %d builds, want %d", tc.name, got, tc.wantBuilds)
			}
			if !tc.wantErr {
				if err != nil || acc.ID == "" {
					t.Fatalf("Submit(%s) = %+v, %v, want success", tc.name, acc, err)
				}
				return
			}
			// Out of retries, the caller sees the server's own answer.
			var ce *client.Error
			if !errors.As(err, &ce) || ce.StatusCode != http.StatusServiceUnavailable || ce.Code != api.CodeUnavailable || ce.Message != "gateway is restarting" {
				t.Errorf("Submit(%s) = %v (%T), want *client.Error 503 %s %q", tc.name, err, err, api.CodeUnavailable, "gateway is restarting")
			}
		})
	}

	// GETs are retried the same way.
	u := &unavailable{h: g.srv, n: 2}
	c := newClient(t, serve(t, u), token)
	if _, err := c.List(ctx); err != nil {
		t.Errorf("List() behind two 503s = %v, want success", err)
	}
}

func TestClientConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := client.New("http://"+addr, token, client.WithRetries(1, time.Millisecond), client.WithRestartWait(0)) // waiting out restarts has its own test
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var calls atomic.Int32
	tests := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := c.Get(ctx, "x"); return err }},
		{"List", func() error { _, err := c.List(ctx); return err }},
		{"Cancel", func() error { _, err := c.Cancel(ctx, "x"); return err }},
		{"Logs", func() error { return c.Logs(ctx, "x", true, io.Discard) }},
		{"Submit", func() error {
			_, err := c.Submit(ctx, api.BuildSpec{Destinations: []string{"127.0.0.1:1/a:b"}}, contextFunc([]byte("x"), &calls), nil)
			return err
		}},
	}
	for _, tc := range tests {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), "cannot reach buildgw at http://"+addr) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s() against a closed port = %v, want \"cannot reach buildgw at http://%s: ...connection refused\"", tc.name, err, addr)
		}
	}

	// A cancelled context is reported as such, not as an unreachable server.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Get(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
}

func TestClientWaitsForFullQueue(t *testing.T) {
	// No workers and room for one: the second submit finds the queue full
	// until the first build is cancelled.
	te := testmanager.New(t, testmanager.Options{NoWorkers: true, Builder: []jobs.Option{jobs.WithMaxQueued(1, 0)}})
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, server.New(te.M, auth, nil))
	ctx := context.Background()
	archive := contextTar(t, scratchFiles)
	spec := api.BuildSpec{Destinations: []string{te.Registry + "/test/queue:v1"}}
	var calls atomic.Int32

	first, err := newClient(t, url, token).Submit(ctx, spec, contextFunc(archive, &calls), nil)
	if err != nil {
		t.Fatalf("first Submit = %v", err)
	}

	// Without waiting, the caller sees the 429 and its message.
	c0, _ := client.New(url, token, client.WithQueueWait(0))
	_, err = c0.Submit(ctx, spec, contextFunc(archive, &calls), nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusTooManyRequests || ce.Code != api.CodeQueueFull {
		t.Fatalf("Submit(queue full, no waiting) = %v, want *client.Error 429 %s", err, api.CodeQueueFull)
	}

	waits := make(chan time.Duration, 10)
	c, _ := client.New(url, token, client.WithQueueWait(time.Minute), client.WithWaitNotice(func(d time.Duration, reason string) {
		if strings.Contains(reason, "queue full") {
			waits <- d
		}
	}))
	type result struct {
		acc *api.Accepted
		err error
	}
	done := make(chan result, 1)
	go func() {
		acc, err := c.Submit(ctx, spec, contextFunc(archive, &calls), nil)
		done <- result{acc, err}
	}()
	select {
	case d := <-waits:
		if d < time.Second {
			t.Errorf("wait announced = %s, want the Retry-After of at least 1s", d)
		}
	case r := <-done:
		t.Fatalf("Submit(queue full) = %+v, %v without waiting", r.acc, r.err)
	case <-time.After(testenv.Scale(30 * time.Second)):
		t.Fatal("Submit(queue full) neither waited nor returned")
	}
	if _, err := newClient(t, url, token).Cancel(ctx, first.ID); err != nil {
		t.Fatalf("Cancel = %v", err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.acc.ID == "" || r.acc.ID == first.ID {
			t.Errorf("Submit after the queue emptied = %+v, %v, want a new build", r.acc, r.err)
		}
	case <-time.After(testenv.Scale(2 * time.Minute)):
		t.Fatal("Submit did not retry after the queue emptied")
	}
	if n := len(te.M.List("ci")); n != 2 {
		t.Errorf("builds = %d, want 2 (no duplicate from the retries)", n)
	}
}

// TestSubmitContextErrorNotRetried: a context this side cannot read (a
// Dockerfile outside it, a file gone) is not the network's fault: Submit
// reports it at once, as itself, without another attempt.
func TestSubmitContextErrorNotRetried(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	bad := errors.New("reading context: file vanished")
	start := time.Now()
	_, err = c.Submit(context.Background(), api.BuildSpec{Destinations: []string{"r.example.com/a:1"}},
		func() io.ReadCloser {
			return io.NopCloser(io.MultiReader(strings.NewReader("partial"), iotestErrReader{bad}))
		}, nil)
	if !errors.Is(err, bad) || strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("Submit with an unreadable context = %v, want %v as itself", err, bad)
	}
	if n := requests.Load(); n > 1 {
		t.Errorf("Submit with an unreadable context made %d requests, want at most 1", n)
	}
	if d := time.Since(start); d > testenv.Scale(2*time.Second) {
		t.Errorf("Submit with an unreadable context took %v, want at once", d)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

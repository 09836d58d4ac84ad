package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/workspace"
)

const (
	aliceToken = "alice-secret-token"
	bobToken   = "bob-secret-token"
)

// gw is a real server.Server over a real Manager with the kaniko runner,
// pushing to an in-memory registry on loopback.
type gw struct {
	url      string
	m        *jobs.Manager
	stateDir string
	reg      string
}

type gwOptions struct {
	noWorkers bool // accept builds but never run them
	builder   []jobs.Option
	server    []server.Option
	log       *slog.Logger // nil: none
}

func newGateway(t *testing.T, o gwOptions) *gw {
	t.Helper()
	te := testmanager.New(t, testmanager.Options{NoWorkers: o.noWorkers, Builder: o.builder})
	m, dir, reg := te.M, te.StateDir, te.Registry
	auth, err := token.New([]token.Token{
		{Name: "alice", SHA256: token.HashToken(aliceToken)},
		{Name: "bob", SHA256: "sha256:" + token.HashToken(bobToken)},
	})
	if err != nil {
		t.Fatalf("token.New = %v", err)
	}
	srv := httptest.NewServer(server.New(m, auth, o.log, o.server...))
	t.Cleanup(srv.Close)
	return &gw{url: srv.URL, m: m, stateDir: dir, reg: reg}
}

func (g *gw) dest(repo string) string { return g.reg + "/test/" + repo + ":v1" }

type entry struct {
	hdr  tar.Header
	body string
}

func reg(name, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func tarOf(t testing.TB, gz bool, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func scratchContext(t testing.TB) []byte {
	return tarOf(t, true,
		reg("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"),
		reg("hello.txt", "hello from the server test\n"))
}

type part struct {
	name, filename, contentType string
	body                        []byte
}

// curlBody is the body `curl -F spec=<spec.json -F context=@ctx.tar.gz`
// sends: a form field, then a file part.
func curlBody(spec string, ctx []byte) []part {
	return []part{
		{name: "spec", body: []byte(spec)},
		{name: "context", filename: "ctx.tar.gz", contentType: "application/octet-stream", body: ctx},
	}
}

func multipartBody(t testing.TB, parts []part) (body []byte, contentType string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.filename != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", cd)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.body)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

func specJSON(dest ...string) string {
	b, _ := json.Marshal(api.BuildSpec{Destinations: dest})
	return string(b)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorBody(t testing.TB) api.ErrorBody {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error.Code == "" {
		t.Fatalf("error answer %d %q is not a JSON ErrorBody: %v", r.status, r.body, err)
	}
	return eb
}

func do(t testing.TB, method, url, token, contentType string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading answer: %v", method, url, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func (g *gw) submit(t testing.TB, token string, parts []part) response {
	t.Helper()
	body, ct := multipartBody(t, parts)
	return do(t, http.MethodPost, g.url+"/v1/builds", token, ct, bytes.NewReader(body))
}

func (g *gw) get(t testing.TB, token, id string) api.Build {
	t.Helper()
	r := do(t, http.MethodGet, g.url+"/v1/builds/"+id, token, "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/builds/%s = %d %s, want 200", id, r.status, r.body)
	}
	var b api.Build
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("GET /v1/builds/%s: %v", id, err)
	}
	return b
}

func (g *gw) waitFinal(t testing.TB, token, id string, d time.Duration) api.Build {
	t.Helper()
	d = testenv.Scale(d)
	deadline := time.Now().Add(d)
	for {
		b := g.get(t, token, id)
		if b.Status.Final() {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %v after %s", id, b.Status, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAuth(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true})
	tests := []struct {
		name       string
		method     string
		path       string
		header     string // Authorization
		wantStatus int
	}{
		{"no token", http.MethodGet, "/v1/builds", "", http.StatusUnauthorized},
		{"wrong token", http.MethodGet, "/v1/builds", "Bearer not-the-token", http.StatusUnauthorized},
		{"hash instead of token", http.MethodGet, "/v1/builds", "Bearer " + token.HashToken(aliceToken), http.StatusUnauthorized},
		{"basic auth", http.MethodGet, "/v1/builds", "Basic YWxpY2U6c2VjcmV0", http.StatusUnauthorized},
		{"empty bearer", http.MethodGet, "/v1/builds", "Bearer ", http.StatusUnauthorized},
		{"no token on submit", http.MethodPost, "/v1/builds", "", http.StatusUnauthorized},
		{"no token on get", http.MethodGet, "/v1/builds/abc", "", http.StatusUnauthorized},
		{"no token on logs", http.MethodGet, "/v1/builds/abc/logs", "", http.StatusUnauthorized},
		{"no token on cancel", http.MethodPost, "/v1/builds/abc/cancel", "", http.StatusUnauthorized},
		{"good token", http.MethodGet, "/v1/builds", "Bearer " + aliceToken, http.StatusOK},
		{"good token, lower-case scheme", http.MethodGet, "/v1/builds", "bearer " + bobToken, http.StatusOK},
		{"healthz without auth", http.MethodGet, "/healthz", "", http.StatusOK},
		{"readyz without auth", http.MethodGet, "/readyz", "", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, g.url+tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("%s %s with %q = %d %s, want %d", tc.method, tc.path, tc.header, resp.StatusCode, body, tc.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s %s Content-Type = %q, want JSON", tc.method, tc.path, ct)
			}
			if tc.wantStatus != http.StatusUnauthorized {
				return
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("%s %s WWW-Authenticate = %q, want a Bearer challenge", tc.method, tc.path, got)
			}
			eb := response{resp.StatusCode, resp.Header, body}.errorBody(t)
			if eb.Error.Code != api.CodeUnauthorized {
				t.Errorf("%s %s error code = %q, want %q", tc.method, tc.path, eb.Error.Code, api.CodeUnauthorized)
			}
		})
	}

	r := do(t, http.MethodGet, g.url+"/readyz", "", "", nil)
	var ready struct {
		Ready   bool              `json:"ready"`
		Runners map[string]string `json:"runners"`
	}
	if err := json.Unmarshal(r.body, &ready); err != nil || !ready.Ready || ready.Runners["kaniko"] != "ok" {
		t.Errorf("GET /readyz = %s (%v), want ready with kaniko ok", r.body, err)
	}
}

// streamLog follows a build's log over HTTP until the server ends it.
func streamLog(t *testing.T, url, token string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s = %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestSubmitStatusLogs(t *testing.T) {
	g := newGateway(t, gwOptions{})
	dest := g.dest("curl")

	// A spec file sent with curl -F spec=<spec.json ends with a newline.
	r := g.submit(t, aliceToken, curlBody(specJSON(dest)+"\n", scratchContext(t)))
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/builds = %d %s, want 202", r.status, r.body)
	}
	var acc api.Accepted
	if err := json.Unmarshal(r.body, &acc); err != nil {
		t.Fatalf("POST /v1/builds answer %s: %v", r.body, err)
	}
	if acc.ID == "" || acc.StatusURL != "/v1/builds/"+acc.ID || acc.LogsURL != "/v1/builds/"+acc.ID+"/logs" {
		t.Fatalf("POST /v1/builds = %+v, want id, status_url and logs_url", acc)
	}
	if acc.Status != api.StatusQueued && acc.Status != api.StatusRunning {
		t.Errorf("POST /v1/builds status = %q, want queued or running", acc.Status)
	}

	// Follow the log from the start while the build runs.
	type result struct {
		log string
		err error
	}
	followed := make(chan result, 1)
	go func() {
		s, err := streamLog(t, g.url+acc.LogsURL+"?follow=1", aliceToken)
		followed <- result{s, err}
	}()

	b := g.waitFinal(t, aliceToken, acc.ID, 2*time.Minute)
	if b.Status != api.StatusSucceeded {
		t.Fatalf("build %s = %v (%q), want %v", acc.ID, b.Status, b.Error, api.StatusSucceeded)
	}
	ref, _ := name.ParseReference(dest)
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatalf("remote.Head(%q) = %v", dest, err)
	}
	if b.Digest != desc.Digest.String() {
		t.Errorf("build digest = %q, want the registry's %q", b.Digest, desc.Digest)
	}
	if b.Runner != "kaniko" || len(b.Destinations) != 1 || b.Destinations[0] != dest {
		t.Errorf("build = %+v, want runner kaniko and destination %q", b, dest)
	}

	var res result
	select {
	case res = <-followed:
	case <-time.After(testenv.Scale(30 * time.Second)):
		t.Fatal("following the log did not end after the build ended")
	}
	if res.err != nil {
		t.Fatalf("following the log: %v", res.err)
	}
	for _, want := range []string{"#buildgw accepted", "COPY hello.txt /hello.txt", "#buildgw pushed " + b.Digest} {
		if !strings.Contains(res.log, want) {
			t.Errorf("followed log lacks %q:\n%s", want, res.log)
		}
	}

	// Reading from an offset returns the rest, identically.
	for _, off := range []int{0, 10, len(res.log)} {
		r := do(t, http.MethodGet, fmt.Sprintf("%s%s?offset=%d", g.url, acc.LogsURL, off), aliceToken, "", nil)
		if r.status != http.StatusOK || string(r.body) != res.log[off:] {
			t.Errorf("GET logs?offset=%d = %d %q, want 200 %q", off, r.status, r.body, res.log[off:])
		}
	}
	if r := do(t, http.MethodGet, g.url+acc.LogsURL+"?offset=-1", aliceToken, "", nil); r.status != http.StatusBadRequest {
		t.Errorf("GET logs?offset=-1 = %d, want 400", r.status)
	}

	// The list holds it for alice only.
	r = do(t, http.MethodGet, g.url+"/v1/builds", aliceToken, "", nil)
	var list api.BuildList
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Builds) != 1 || list.Builds[0].ID != acc.ID {
		t.Errorf("GET /v1/builds as alice = %s, want just %s", r.body, acc.ID)
	}
	r = do(t, http.MethodGet, g.url+"/v1/builds", bobToken, "", nil)
	if string(bytes.TrimSpace(r.body)) != `{"builds":[]}` {
		t.Errorf("GET /v1/builds as bob = %s, want an empty list", r.body)
	}

	// Other identities and unknown ids get 404; cancelling a finished build 409.
	tests := []struct {
		method, path, token string
		wantStatus          int
		wantCode            string
	}{
		{http.MethodGet, "/v1/builds/" + acc.ID, bobToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodGet, "/v1/builds/" + acc.ID + "/logs", bobToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodPost, "/v1/builds/" + acc.ID + "/cancel", bobToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodGet, "/v1/builds/nosuchbuild", aliceToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodGet, "/v1/builds/nosuchbuild/logs", aliceToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodPost, "/v1/builds/nosuchbuild/cancel", aliceToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodGet, "/v2/whatever", aliceToken, http.StatusNotFound, api.CodeNotFound},
		{http.MethodPost, "/v1/builds/" + acc.ID + "/cancel", aliceToken, http.StatusConflict, api.CodeConflict},
	}
	for _, tc := range tests {
		r := do(t, tc.method, g.url+tc.path, tc.token, "", nil)
		if r.status != tc.wantStatus {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.wantStatus)
			continue
		}
		if eb := r.errorBody(t); eb.Error.Code != tc.wantCode {
			t.Errorf("%s %s code = %q, want %q", tc.method, tc.path, eb.Error.Code, tc.wantCode)
		}
	}
}

func TestCancelRunning(t *testing.T) {
	g := newGateway(t, gwOptions{})
	base := testenv.Busybox(t, g.reg)
	ctx := tarOf(t, false, reg("Dockerfile", "FROM "+base+"\nRUN sleep 30\n"))
	r := g.submit(t, aliceToken, curlBody(specJSON(g.dest("sleepy")), ctx))
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/builds = %d %s, want 202", r.status, r.body)
	}
	var acc api.Accepted
	json.Unmarshal(r.body, &acc)
	deadline := time.Now().Add(testenv.Scale(time.Minute))
	for {
		lr := do(t, http.MethodGet, g.url+acc.LogsURL, aliceToken, "", nil)
		if strings.Contains(string(lr.body), "Running: [/bin/sh -c sleep 30]") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build never started its RUN step; log:\n%s", lr.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	r = do(t, http.MethodPost, g.url+acc.StatusURL+"/cancel", aliceToken, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST cancel = %d %s, want 202", r.status, r.body)
	}
	var b api.Build
	json.Unmarshal(r.body, &b)
	if b.Status != api.StatusCancelled {
		t.Errorf("POST cancel answered status %v after %s, want %v", b.Status, time.Since(start), api.StatusCancelled)
	}
	if _, err := os.Stat(filepath.Join(workspace.NewLayout(g.stateDir).Jobs, acc.ID)); !os.IsNotExist(err) {
		t.Errorf("workspace of cancelled build: Stat = %v, want it gone", err)
	}
}

// badEntryContext is a context holding a Dockerfile and one hostile entry.
func badEntryContext(t testing.TB, e entry) []byte {
	return tarOf(t, true, reg("Dockerfile", "FROM scratch\n"), e)
}

func TestSubmitRejects(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true, builder: []jobs.Option{
		jobs.WithContextLimits(archive.Limits{MaxBytes: 1 << 20}),
	}})
	dest := g.dest("rejected")
	good := scratchContext(t)
	truncated := good[:len(good)-30]
	big := tarOf(t, true, reg("Dockerfile", "FROM scratch\n"), reg("big.bin", strings.Repeat("z", 2<<20)))
	tests := []struct {
		name        string
		contentType string // overrides the multipart one
		parts       []part
		wantStatus  int
		wantCode    string
		wantIn      string // substring of the message
	}{
		{"not multipart", "application/json", curlBody(specJSON(dest), good), http.StatusUnsupportedMediaType, api.CodeInvalidSpec, "multipart/form-data"},
		{"no content type", "-", curlBody(specJSON(dest), good), http.StatusUnsupportedMediaType, api.CodeInvalidSpec, "multipart/form-data"},
		{"multipart without boundary", "multipart/form-data", curlBody(specJSON(dest), good), http.StatusBadRequest, api.CodeInvalidSpec, "multipart"},
		{"context before spec", "", []part{curlBody("", good)[1], curlBody(specJSON(dest), nil)[0]}, http.StatusBadRequest, api.CodeInvalidSpec, "first part must be spec"},
		{"spec only", "", curlBody(specJSON(dest), nil)[:1], http.StatusBadRequest, api.CodeInvalidContext, "second part must be context"},
		{"no parts", "", nil, http.StatusBadRequest, api.CodeInvalidSpec, "first part must be spec"},
		{"bad JSON spec", "", curlBody(`{"destinations": [`, good), http.StatusBadRequest, api.CodeInvalidSpec, "decoding spec"},
		{"unknown spec field", "", curlBody(`{"destinations":["`+dest+`"],"push_to":"x"}`, good), http.StatusBadRequest, api.CodeInvalidSpec, "push_to"},
		{"trailing data after spec", "", curlBody(specJSON(dest)+`{"destinations":["`+g.dest("other")+`"]}`, good), http.StatusBadRequest, api.CodeInvalidSpec, "after the JSON object"},
		{"no destinations", "", curlBody(`{}`, good), http.StatusBadRequest, api.CodeInvalidSpec, "destinations"},
		{"destination without registry", "", curlBody(specJSON("app:v1"), good), http.StatusBadRequest, api.CodeInvalidSpec, "registry and tag"},
		{"absolute path", "", curlBody(specJSON(dest), badEntryContext(t, reg("/etc/cron.d/evil", "x"))), http.StatusBadRequest, api.CodeInvalidContext, "/etc/cron.d/evil"},
		{"dot-dot escape", "", curlBody(specJSON(dest), badEntryContext(t, reg("a/../../evil", "x"))), http.StatusBadRequest, api.CodeInvalidContext, "a/../../evil"},
		{"symlink escape", "", curlBody(specJSON(dest), badEntryContext(t, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "passwd", Linkname: "../../../etc/passwd", Mode: 0o777}})), http.StatusBadRequest, api.CodeInvalidContext, `"passwd"`},
		{"absolute symlink", "", curlBody(specJSON(dest), badEntryContext(t, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "root", Linkname: "/", Mode: 0o777}})), http.StatusBadRequest, api.CodeInvalidContext, `"root"`},
		{"device node", "", curlBody(specJSON(dest), badEntryContext(t, entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/mem", Mode: 0o600, Devmajor: 1, Devminor: 1}})), http.StatusBadRequest, api.CodeInvalidContext, "dev/mem"},
		{"truncated gzip", "", curlBody(specJSON(dest), truncated), http.StatusBadRequest, api.CodeInvalidContext, "truncated"},
		{"missing Dockerfile", "", curlBody(specJSON(dest), tarOf(t, true, reg("hello.txt", "x"))), http.StatusBadRequest, api.CodeInvalidContext, "Dockerfile"},
		{"context over the limit", "", curlBody(specJSON(dest), big), http.StatusRequestEntityTooLarge, api.CodeTooLarge, "big.bin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(g.m.List("alice"))
			body, ct := multipartBody(t, tc.parts)
			switch tc.contentType {
			case "":
			case "-":
				ct = ""
			default:
				ct = tc.contentType
			}
			r := do(t, http.MethodPost, g.url+"/v1/builds", aliceToken, ct, bytes.NewReader(body))
			if r.status != tc.wantStatus {
				t.Fatalf("POST /v1/builds (%s) = %d %s, want %d", tc.name, r.status, r.body, tc.wantStatus)
			}
			eb := r.errorBody(t)
			if eb.Error.Code != tc.wantCode || !strings.Contains(eb.Error.Message, tc.wantIn) {
				t.Errorf("POST /v1/builds (%s) = %s %q, want %s with %q", tc.name, eb.Error.Code, eb.Error.Message, tc.wantCode, tc.wantIn)
			}
			if n := len(g.m.List("alice")) - before; n != 0 {
				t.Errorf("POST /v1/builds (%s) created %d builds, want none", tc.name, n)
			}
			// No worker runs here: every workspace belongs to an accepted build.
			if ents, _ := os.ReadDir(workspace.NewLayout(g.stateDir).Jobs); len(ents) != len(g.m.List("alice")) {
				t.Errorf("POST /v1/builds (%s) left %d workspaces for %d builds", tc.name, len(ents), len(g.m.List("alice")))
			}
		})
	}
}

// zeroReader yields n zero bytes without holding them.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

func TestLargeContextStreams(t *testing.T) {
	const size = 200 << 20
	g := newGateway(t, gwOptions{noWorkers: true})

	// The body is generated while it is sent: neither side ever holds it.
	body, ct := streamingBody(specJSON(g.dest("big")), size)

	start := time.Now()
	var r response
	growth := testenv.PeakHeapGrowth(func() {
		r = do(t, http.MethodPost, g.url+"/v1/builds", aliceToken, ct, body)
	})
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/builds with %d MiB = %d %s, want 202", size>>20, r.status, r.body)
	}
	var acc api.Accepted
	json.Unmarshal(r.body, &acc)
	fi, err := os.Stat(filepath.Join(g.stateDir, "jobs", acc.ID, "context", "zeros"))
	if err != nil || fi.Size() != size {
		t.Errorf("extracted zeros: %v, %v, want %d bytes", fi, err, size)
	}
	t.Logf("uploaded %d MiB in %s; heap in use grew by %.1f MiB at most", size>>20, time.Since(start).Round(time.Millisecond), float64(growth)/(1<<20))
	if growth > 64<<20 {
		t.Errorf("heap in use grew by %d MiB while streaming a %d MiB context, want < 64 MiB", growth>>20, size>>20)
	}
}

// streamingBody returns a multipart body holding spec and a tar context
// with one file of size zero bytes, generated while it is read.
func streamingBody(spec string, size int64) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			w, err := mw.CreateFormField("spec")
			if err != nil {
				return err
			}
			io.WriteString(w, spec)
			if w, err = mw.CreateFormFile("context", "ctx.tar"); err != nil {
				return err
			}
			tw := tar.NewWriter(w)
			df := "FROM scratch\nCOPY zeros /zeros\n"
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: int64(len(df))})
			io.WriteString(tw, df)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: size}); err != nil {
				return err
			}
			if _, err := io.CopyBuffer(tw, &zeroReader{n: size}, make([]byte, 256<<10)); err != nil {
				return err
			}
			if err := tw.Close(); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	return pr, mw.FormDataContentType()
}

// A rejection that comes before the upload ends must still reach the
// client, not a reset connection.
func TestEarlyRejectionOfLargeUpload(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true, builder: []jobs.Option{
		jobs.WithContextLimits(archive.Limits{MaxBytes: 1 << 20}),
	}})
	tests := []struct {
		name       string
		spec       string
		wantStatus int
		wantCode   string
	}{
		{"invalid spec", `{"destinations":["nope"]}`, http.StatusBadRequest, api.CodeInvalidSpec},
		{"context over the limit", specJSON(g.dest("big")), http.StatusRequestEntityTooLarge, api.CodeTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := streamingBody(tc.spec, 64<<20)
			r := do(t, http.MethodPost, g.url+"/v1/builds", aliceToken, ct, body)
			if r.status != tc.wantStatus {
				t.Fatalf("POST /v1/builds (%s, 64 MiB) = %d %s, want %d", tc.name, r.status, r.body, tc.wantStatus)
			}
			if eb := r.errorBody(t); eb.Error.Code != tc.wantCode {
				t.Errorf("POST /v1/builds (%s) code = %q, want %q", tc.name, eb.Error.Code, tc.wantCode)
			}
		})
	}
}

// An upload that finds no room left for its workspace gets 507 and a
// JSON error saying so, and leaves nothing behind.
func TestWorkspaceFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the workspaces' tmpfs needs root")
	}
	g := newGateway(t, gwOptions{noWorkers: true})
	// Workspaces on a disk of 16 MiB. (Workspaces in memory never run
	// out: an upload that might not fit goes to disk.)
	mem := workspace.NewLayout(g.stateDir).Jobs
	if err := unix.Mount("tmpfs", mem, "tmpfs", 0, "size=16m,mode=0711"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mem, unix.MNT_DETACH) })
	body, ct := streamingBody(specJSON(g.dest("full")), 32<<20)
	r := do(t, http.MethodPost, g.url+"/v1/builds", aliceToken, ct, body)
	if r.status != http.StatusInsufficientStorage {
		t.Fatalf("POST /v1/builds (32 MiB into a 16 MiB disk) = %d %s, want 507", r.status, r.body)
	}
	if eb := r.errorBody(t); eb.Error.Code != api.CodeUnavailable || !strings.Contains(eb.Error.Message, "out of space for build workspaces") {
		t.Errorf("POST /v1/builds (tmpfs full) error = %+v, want %s naming the workspaces", eb.Error, api.CodeUnavailable)
	}
	ents, err := os.ReadDir(mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ".trash" {
			t.Errorf("left in the workspaces' disk after a rejected upload: %s", e.Name())
		}
	}
	if len(g.m.List("alice")) != 0 {
		t.Errorf("builds after a rejected upload = %d, want 0", len(g.m.List("alice")))
	}
}

// TestIdempotencyKey: an Idempotency-Key is a key of the job store's
// index and part of its JSON record, so only printable ASCII of a bounded
// length is taken; anything else is refused before any build is stored.
// A good key, such as buildctl-lite makes, still returns the first build.
func TestIdempotencyKey(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true})
	submit := func(t *testing.T, keys ...string) response {
		t.Helper()
		body, ct := multipartBody(t, curlBody(specJSON(g.dest("idem")), scratchContext(t)))
		req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/builds", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+aliceToken)
		req.Header.Set("Content-Type", ct)
		for _, k := range keys {
			req.Header.Add(api.IdempotencyKeyHeader, k)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{resp.StatusCode, resp.Header, b}
	}

	bad := []struct {
		name string
		keys []string
	}{
		{"invalid UTF-8", []string{"key-\xff\xfe"}},
		{"valid UTF-8 beyond ASCII", []string{"clé"}},
		{"control character", []string{"key\tone"}},
		{"space", []string{"key one"}},
		{"256 characters", []string{strings.Repeat("k", 256)}},
		{"40 KiB", []string{strings.Repeat("k", 40<<10)}},
		{"two keys", []string{"key-1", "key-2"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := submit(t, tc.keys...)
			if r.status != http.StatusBadRequest {
				t.Fatalf("POST /v1/builds with Idempotency-Key %.40q = %d %s, want 400", tc.keys, r.status, r.body)
			}
			if eb := r.errorBody(t); eb.Error.Code != api.CodeInvalidSpec || !strings.Contains(eb.Error.Message, api.IdempotencyKeyHeader) {
				t.Errorf("POST /v1/builds with Idempotency-Key %.40q: error = %+v, want %s naming %s", tc.keys, eb.Error, api.CodeInvalidSpec, api.IdempotencyKeyHeader)
			}
		})
	}
	if got := g.m.List("alice"); len(got) != 0 {
		t.Fatalf("builds after refused keys = %d, want none", len(got))
	}

	cliKey, err := client.NewIdempotencyKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{cliKey, strings.Repeat("~", 255), "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}"} {
		var ids []string
		for range 2 {
			r := submit(t, key)
			var acc api.Accepted
			if err := json.Unmarshal(r.body, &acc); err != nil || r.status != http.StatusAccepted {
				t.Fatalf("POST /v1/builds with Idempotency-Key %.40q = %d %s, want 202", key, r.status, r.body)
			}
			ids = append(ids, acc.ID)
		}
		if ids[0] != ids[1] {
			t.Errorf("POST /v1/builds twice with Idempotency-Key %.40q = builds %v, want one", key, ids)
		}
	}
}

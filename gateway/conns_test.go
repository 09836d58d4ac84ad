package gateway_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// startConnGateway starts a gateway whose API closes idle connections and
// unsent bodies after a second, changed further by edit, and returns its
// address (host:port), its token and its registry.
func startConnGateway(t *testing.T, edit func(*gateway.Config)) (addr, tok, reg string) {
	t.Helper()
	testenv.RequireSandbox(t)
	reg = testenv.Registry(t)
	tok = "bgw_conns_" + randHex(t)
	cfg := testConfig(t, tok, fmt.Sprintf("rules:\n  - name: all\n    match: {kind: token}\n    allow:\n      destinations: [\"%[1]s/t/**\"]\n      from: [\"%[1]s/**\"]\n", reg))
	cfg.Runners.Dind.Disabled = true
	cfg.IdleTimeout = gateway.Duration(time.Second)
	cfg.RequestBodyTimeout = gateway.Duration(time.Second)
	if edit != nil {
		edit(&cfg)
	}
	g, err := gateway.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("gateway.New = %v", err)
	}
	serve(t, g)
	waitHealthy(t, &http.Client{Timeout: testenv.Scale(10 * time.Second)}, g.URL())
	return strings.TrimPrefix(g.URL(), "http://"), tok, reg
}

// TestIdleConnectionClosed: a keep-alive connection that stays silent
// after its request is closed after idle_timeout, so that idle clients,
// authenticated or not, cannot hold the gateway's file descriptors.
func TestIdleConnectionClosed(t *testing.T) {
	addr, _, _ := startConnGateway(t, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testenv.Scale(10 * time.Second)))
	resp, br, err := testenv.RawRequest(t, conn, fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr))
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET /healthz = %d (close %t), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	took := testenv.ClosedWithin(t, conn, br, time.Second+testenv.Scale(5*time.Second))
	if took < 500*time.Millisecond {
		t.Errorf("idle connection closed after %s, want about idle_timeout (1s)", took.Round(time.Millisecond))
	}
}

// TestUnsentBodyClosed: a request that declares a body and never sends
// it is answered and its connection closed within request_body_timeout,
// whether its credentials are refused, it has none, or it goes nowhere,
// gin's router included: a path with a trailing slash, which gin would
// otherwise redirect itself before any middleware runs, and a method the
// path does not have. (net/http reads up to 256 KiB of a body left unread
// before answering, with no bound of its own; beyond, it answers and
// closes at once.)
func TestUnsentBodyClosed(t *testing.T) {
	addr, tok, _ := startConnGateway(t, nil)
	tests := []struct {
		name, method, path, bearer string
		length                     int
		want                       int
	}{
		{"submit without credentials", http.MethodPost, "/v1/builds", "", 200000, http.StatusUnauthorized},
		{"submit with a wrong token", http.MethodPost, "/v1/builds", "bgw_wrong", 200000, http.StatusUnauthorized},
		{"no such endpoint", http.MethodPost, "/v1/nothing", "", 1000, http.StatusNotFound},
		{"cancel of no build", http.MethodPost, "/v1/builds/nope/cancel", tok, 1000, http.StatusNotFound},
		{"beyond net/http's discard limit", http.MethodPost, "/v1/builds", "", 1 << 20, http.StatusUnauthorized},
		{"submit with a trailing slash", http.MethodPost, "/v1/builds/", "", 1000, http.StatusNotFound},
		{"submit with a trailing slash and a token", http.MethodPost, "/v1/builds/", tok, 1000, http.StatusNotFound},
		{"cancel with a trailing slash", http.MethodPost, "/v1/builds/nope/cancel/", "", 1000, http.StatusNotFound},
		{"status with a trailing slash", http.MethodGet, "/healthz/", "", 1000, http.StatusNotFound},
		{"a method the path has not", http.MethodPut, "/v1/builds", "", 1000, http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			limit := time.Second + testenv.Scale(5*time.Second)
			conn.SetDeadline(time.Now().Add(limit))
			auth := ""
			if tc.bearer != "" {
				auth = "Authorization: Bearer " + tc.bearer + "\r\n"
			}
			start := time.Now()
			resp, br, err := testenv.RawRequest(t, conn, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: multipart/form-data; boundary=x\r\nContent-Length: %d\r\n\r\n",
				tc.method, tc.path, addr, auth, tc.length))
			if err != nil {
				t.Fatalf("%s %s with an unsent body of %d bytes: %v after %s, want %d within request_body_timeout (1s)",
					tc.method, tc.path, tc.length, err, time.Since(start).Round(time.Millisecond), tc.want)
			}
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s with an unsent body = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
			testenv.ClosedWithin(t, conn, br, limit-time.Since(start))
		})
	}
}

// TestSlowUploadWithinRate: an authenticated upload that takes longer
// than request_body_timeout but keeps above
// context.min_upload_bytes_per_second is accepted, and so is one of any
// speed when that bound is off; request_body_timeout is for the other
// requests' bodies.
func TestSlowUploadWithinRate(t *testing.T) {
	tests := []struct {
		name    string
		minRate int64
	}{
		{"above the minimum rate", 1024},
		{"no minimum rate", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The window grows with the time scale, and the pieces' interval
			// with it, so that a busy machine delaying a piece neither
			// stalls a window nor takes the rate's margin (8 KiB a window,
			// above 1 KiB a second up to a scale of 4).
			window := testenv.Scale(time.Second)
			addr, tok, reg := startConnGateway(t, func(c *gateway.Config) {
				c.Context.MinUploadBytesPerSecond = tc.minRate
				c.Context.UploadRateWindow = gateway.Duration(window)
			})
			pad := make([]byte, 24<<10)
			rand.Read(pad)
			spec := api.BuildSpec{Destinations: []string{reg + "/t/slow:1"}}
			ct, body := multipartBody(t, spec, map[string]string{"Dockerfile": "FROM scratch\nCOPY pad /pad\n", "pad": string(pad)})
			// 2 KiB every quarter window (8 KiB/s unscaled): about 3s in all.
			req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/builds", &testenv.Trickle{B: body, Size: 2 << 10, Interval: window / 4})
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(len(body))
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer "+tok)
			start := time.Now()
			resp, err := (&http.Client{Timeout: testenv.Scale(30 * time.Second)}).Do(req)
			if err != nil {
				t.Fatalf("slow upload of %d bytes: %v after %s, want 202", len(body), err, time.Since(start).Round(time.Millisecond))
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("slow upload of %d bytes in %s = %d %s, want 202", len(body), took.Round(time.Millisecond), resp.StatusCode, raw)
			}
			if took < 2*time.Second {
				t.Errorf("slow upload took %s, want longer than request_body_timeout (1s) for the test to mean anything", took.Round(time.Millisecond))
			}
			var acc api.Accepted
			if err := json.Unmarshal(raw, &acc); err != nil {
				t.Fatalf("202 body %s: %v", raw, err)
			}
			e := &authzEnv{url: "http://" + addr, client: &http.Client{Timeout: testenv.Scale(30 * time.Second)}}
			e.cancel(t, request{bearer: tok}, acc.ID)
		})
	}
}

// TestLogFollowOutlivesTimeouts: a log stream follows a build for longer
// than idle_timeout and request_body_timeout, to its end; it reads
// nothing from the client, so neither may cut it off.
func TestLogFollowOutlivesTimeouts(t *testing.T) {
	addr, tok, reg := startConnGateway(t, nil)
	e := &authzEnv{url: "http://" + addr, client: &http.Client{Timeout: testenv.Scale(30 * time.Second)}}
	r := request{bearer: tok, dockerfile: "FROM " + testenv.Busybox(t, reg) + "\nRUN sleep 4 && echo slept-4s\n", spec: api.BuildSpec{Destinations: []string{reg + "/t/follow:1"}}}
	got := e.submit(t, r)
	if got.status != http.StatusAccepted {
		t.Fatalf("POST /v1/builds = %d %s %q, want 202", got.status, got.code, got.msg)
	}
	req, err := http.NewRequest(http.MethodGet, e.url+"/v1/builds/"+got.id+"/logs?follow=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	start := time.Now()
	resp, err := (&http.Client{Timeout: testenv.Scale(3 * time.Minute)}).Do(req)
	if err != nil {
		t.Fatalf("GET logs?follow=1: %v", err)
	}
	log, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK || err != nil || !strings.Contains(string(log), "slept-4s") {
		t.Fatalf("GET logs?follow=1 = %d after %s, %v; want 200 and the whole log:\n%s", resp.StatusCode, took.Round(time.Millisecond), err, log)
	}
	if took < 3*time.Second {
		t.Errorf("log stream ended after %s, want it to outlive idle_timeout and request_body_timeout (1s) for the test to mean anything", took.Round(time.Millisecond))
	}
	if b := e.wait(t, tok, got.id); b.Status != api.StatusSucceeded {
		t.Errorf("build = %s %q, want succeeded", b.Status, b.Error)
	}
}

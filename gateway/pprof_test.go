package gateway_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestPprofListen: profiles are served on pprof_listen only, never on the
// API's listener.
func TestPprofListen(t *testing.T) {
	testenv.RequireSandbox(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pprofAddr := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t, "bgw_pprof_test", "rules:\n  - name: all\n    match: {kind: token}\n    allow:\n      destinations: [\"127.0.0.1:1/**\"]\n")
	cfg.Runners.Dind.Disabled = true
	cfg.PprofListen = pprofAddr
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("gateway.New = %v", err)
	}
	serve(t, g)

	get := func(url string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(testenv.Scale(10 * time.Second))
		for {
			resp, err := http.Get(url)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s = %v", url, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	tests := []struct {
		name, url string
		wantCode  int
		wantBody  string
	}{
		{"profile index on pprof_listen", "http://" + pprofAddr + "/debug/pprof/", http.StatusOK, "goroutine"},
		{"command line on pprof_listen", "http://" + pprofAddr + "/debug/pprof/cmdline", http.StatusOK, ""},
		{"not on the API listener", g.URL() + "/debug/pprof/", http.StatusNotFound, "NOT_FOUND"},
	}
	for _, tc := range tests {
		code, body := get(tc.url)
		if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
			t.Errorf("%s: GET %s = %d %.200q, want %d containing %q", tc.name, tc.url, code, body, tc.wantCode, tc.wantBody)
		}
	}
}

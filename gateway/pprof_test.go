package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth/token"
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
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, pol, "rules:\n  - name: all\n    match: {kind: token}\n    allow:\n      destinations: [\"127.0.0.1:1/**\"]\n")
	cfg := gateway.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.StateDir = testenv.StateDir(t)
	cfg.Runners.Kaniko.Executor = testenv.Executor(t)
	cfg.Runners.Kaniko.User = testenv.SandboxUser
	cfg.Runners.Dind.Disabled = true
	cfg.Tokens = []gateway.Token{{Name: "ci", SHA256: token.HashToken("bgw_pprof_test")}}
	cfg.PolicyFile = pol
	cfg.PprofListen = pprofAddr
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("gateway.New = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	}()

	get := func(url string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
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

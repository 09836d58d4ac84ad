package cmd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/buildgw/buildgw/api"
)

// interruptingGateway accepts every submit and reports every build as
// interrupted by a restart; from the failAfter-th submit on (if > 0) it
// refuses submits with 401.
type interruptingGateway struct {
	failAfter int

	mu      sync.Mutex
	keys    []string
	badAuth []string
}

func (g *interruptingGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodPost && r.URL.Path == "/v1/builds" {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("Authorization") != "Bearer "+token {
			g.badAuth = append(g.badAuth, r.Method+" "+r.URL.Path)
		}
		g.keys = append(g.keys, r.Header.Get(api.IdempotencyKeyHeader))
		if g.failAfter > 0 && len(g.keys) >= g.failAfter {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"UNAUTHORIZED","message":"token expired"}}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":"b%d","status":"queued","read_token":"%sb%d"}`, len(g.keys), api.ReadTokenPrefix, len(g.keys))
		return
	}
	id := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/builds/"), "/")[0]
	if r.Header.Get("Authorization") != "Bearer "+api.ReadTokenPrefix+id {
		g.badAuth = append(g.badAuth, r.Method+" "+r.URL.Path)
	}
	if strings.HasSuffix(r.URL.Path, "/logs") {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "#buildgw "+api.ErrRestarted+"\n")
		return
	}
	fmt.Fprintf(w, `{"id":%q,"status":"failed","error":%q}`, id, api.ErrRestarted)
}

// TestSubmitResubmitsBounded: submit sends a build that restarts keep
// interrupting again with the same Idempotency-Key, follows each with its
// own read token, and gives up after 3 resubmissions with exit status 4,
// as it does when a resubmission is refused.
func TestSubmitResubmitsBounded(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	tests := []struct {
		name        string
		failAfter   int
		wantSubmits int
		wantMsg     string
	}{
		{"interrupted every time", 0, 1 + maxResubmits, "4 times; run this submit again"},
		{"resubmission refused", 2, 2, "submitting it again failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &interruptingGateway{failAfter: tc.failAfter}
			srv := httptest.NewServer(g)
			defer srv.Close()
			_, stderr, code := runMain(context.Background(), t, "submit", "--server", srv.URL, "--token", token, "-t", "registry.example.com/a/b:1", dir)
			g.mu.Lock()
			defer g.mu.Unlock()
			if code != exitRestarted {
				t.Errorf("submit = exit %d, want %d; stderr:\n%s", code, exitRestarted, stderr)
			}
			errLines := 0
			for _, l := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(l, "Error:") {
					errLines++
					if !strings.Contains(l, tc.wantMsg) {
						t.Errorf("submit's error = %q, want it to say %q", l, tc.wantMsg)
					}
				}
			}
			if errLines != 1 {
				t.Errorf("submit wrote %d error lines, want 1:\n%s", errLines, stderr)
			}
			if len(g.keys) != tc.wantSubmits {
				t.Errorf("submits = %d, want %d", len(g.keys), tc.wantSubmits)
			}
			for _, k := range g.keys {
				if k == "" || k != g.keys[0] {
					t.Errorf("Idempotency-Keys = %q, want one key for all submits", g.keys)
					break
				}
			}
			if len(g.badAuth) > 0 {
				t.Errorf("requests with the wrong credentials (submits need the token, the rest the build's read token): %q", g.badAuth)
			}
		})
	}
}

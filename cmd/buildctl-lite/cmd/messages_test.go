package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
)

// runMain runs buildctl-lite as main does and returns what it wrote and
// its exit status.
func runMain(ctx context.Context, t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("BUILDGW_URL", "")
	t.Setenv("BUILDGW_TOKEN", "")
	t.Setenv("BUILDGW_CONFIG_DIR", t.TempDir())
	var o, e bytes.Buffer
	code = Run(ctx, args, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), code
}

// TestMessages: each mistake gets one line that names it, at once, and a
// non-zero exit status.
func TestMessages(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{})
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, auth, nil))
	t.Cleanup(srv.Close)
	parent := t.TempDir()
	dir := filepath.Join(parent, "ctx")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(parent, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	dest := te.Registry + "/cli/messages:1"
	gw := []string{"--server", srv.URL, "--token", token}

	tests := []struct {
		name       string
		args       []string
		wantStderr string
		wantCode   int
	}{
		{"Dockerfile outside the context", append([]string{"submit", "-t", dest, "-f", "../Dockerfile", dir}, gw...),
			"Error: -f ../Dockerfile is outside the context " + dir + ": the Dockerfile must be inside the context directory (-f is relative to it)\n", 1},
		{"absolute Dockerfile outside the context", append([]string{"submit", "-t", dest, "-f", filepath.Join(parent, "Dockerfile"), dir}, gw...),
			"Error: -f " + filepath.Join(parent, "Dockerfile") + " is outside the context " + dir, 1},
		{"no context", append([]string{"submit", "-t", dest}, gw...),
			"Error: submit needs the build context directory, e.g. `buildctl-lite submit -t REG/APP:TAG .`\n", 1},
		{"two contexts", append([]string{"submit", "-t", dest, dir, dir}, gw...),
			"Error: submit takes one build context directory, got 2 arguments", 1},
		{"digest destination", append([]string{"submit", "-t", te.Registry + "/cli/messages@sha256:" + strings.Repeat("0", 64), dir}, gw...),
			"destinations must be tags (registry/repo:tag), not digests\n", 1},
		{"unknown shell", []string{"completion", "tcsh"},
			"Error: completion: unknown shell \"tcsh\": supported shells are bash, fish, powershell, zsh\n", 1},
		{"audit --server", []string{"audit", "--server", srv.URL, "."},
			"Error: audit talks to no gateway: --server does nothing here\n", 1},
		{"json server error", append([]string{"status", "-o", "json", "nope"}, gw...),
			`{"error":{"code":"NOT_FOUND","message":"build not found"}}` + "\n", 1},
		{"json local error", append([]string{"submit", "-o", "json", "-t", dest}, gw...),
			`{"error":{"code":"ERROR","message":"submit needs the build context directory, e.g. ` + "`buildctl-lite submit -t REG/APP:TAG .`" + `"}}` + "\n", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, code := runMain(context.Background(), t, tc.args...)
			if !strings.Contains(stderr, tc.wantStderr) || strings.Count(stderr, "\n") != 1 || code != tc.wantCode {
				t.Errorf("buildctl-lite %s: stderr %q, exit %d, want one line with %q, exit %d", strings.Join(tc.args, " "), stderr, code, tc.wantStderr, tc.wantCode)
			}
			if stdout != "" {
				t.Errorf("buildctl-lite %s: stdout %q, want nothing", strings.Join(tc.args, " "), stdout)
			}
			if d := time.Since(start); d > testenv.Scale(2*time.Second) {
				t.Errorf("buildctl-lite %s took %v, want the error at once", strings.Join(tc.args, " "), d)
			}
		})
	}

	// An absolute -f inside the context is taken relative to it.
	stdout, stderr, code := runMain(context.Background(), t, append([]string{"submit", "-t", dest, "-f", filepath.Join(dir, "Dockerfile"), dir}, gw...)...)
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(stdout), "sha256:") {
		t.Errorf("submit -f %s: exit %d, stdout %q, stderr %q, want 0 and the digest", filepath.Join(dir, "Dockerfile"), code, stdout, stderr)
	}
	// A shell that exists still gets its script.
	if stdout, stderr, code := runMain(context.Background(), t, "completion", "bash"); code != 0 || !strings.Contains(stdout, "bash completion") {
		t.Errorf("completion bash: exit %d, stderr %q, stdout %.80q, want 0 and a script", code, stderr, stdout)
	}
}

// TestAuditHelpHidesGatewayFlags: audit talks to no gateway, so its help
// offers no --server or --token.
func TestAuditHelpHidesGatewayFlags(t *testing.T) {
	stdout, _, code := runMain(context.Background(), t, "audit", "--help")
	if code != 0 || !strings.Contains(stdout, "--host") {
		t.Fatalf("audit --help: exit %d, %q, want its help", code, stdout)
	}
	for _, f := range []string{"--server", "--token", "--ca-file"} {
		if strings.Contains(stdout, f) {
			t.Errorf("audit --help lists %s:\n%s", f, stdout)
		}
	}
	if stdout, _, _ := runMain(context.Background(), t, "status", "--help"); !strings.Contains(stdout, "--server") {
		t.Errorf("status --help lacks --server:\n%s", stdout)
	}
}

// TestLogsFollowInterrupted: Ctrl-C on logs -f ends it quietly with 130.
func TestLogsFollowInterrupted(t *testing.T) {
	streaming := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/logs") {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(api.Build{ID: "b1", Status: api.StatusRunning})
			return
		}
		w.Write([]byte("step 1\n"))
		w.(http.Flusher).Flush()
		select {
		case streaming <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-streaming
		cancel() // what main's signal.NotifyContext does on Ctrl-C
	}()
	stdout, stderr, code := runMain(ctx, t, "logs", "-f", "--server", srv.URL, "--token", token, "b1")
	if code != exitInterrupted || stderr != "" {
		t.Errorf("logs -f interrupted: exit %d, stderr %q (stdout %q), want 130 and nothing on stderr", code, stderr, stdout)
	}
}

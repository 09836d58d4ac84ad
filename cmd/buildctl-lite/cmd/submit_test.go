package cmd

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/buildgw/buildgw/api/server"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/klauspost/compress/gzip"
)

const token = "cli-test-token"

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runStdin(t, "", args...)
}

// runStdin runs buildctl-lite with stdin and returns what it wrote.
func runStdin(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := New()
	var o, e bytes.Buffer
	cmd.SetOut(&o)
	cmd.SetErr(&e)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return o.String(), e.String(), err
}

func TestSubmit(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{})
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, auth, nil))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY a.txt /a.txt\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a\n"), 0o644)
	dest := te.Registry + "/cli/test:1"

	stdout, stderr, err := run(t, "submit", "--server", srv.URL, "--token", token, "-t", dest, dir)
	if err != nil {
		t.Fatalf("submit = %v, want nil\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "sha256:") || len(last) != 71 {
		t.Errorf("submit: last stdout line = %q, want the digest", last)
	}
	if !strings.Contains(stderr, "COPY a.txt /a.txt") {
		t.Errorf("submit: stderr lacks the build log:\n%s", stderr)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad token", []string{"submit", "--server", srv.URL, "--token", "wrong", "-t", dest, dir}, "invalid token"},
		{"no tag", []string{"submit", "--server", srv.URL, "--token", token, dir}, "no destination"},
		{"no Dockerfile", []string{"submit", "--server", srv.URL, "--token", token, "-t", dest, "-f", "nope/Dockerfile", dir}, "nope/Dockerfile not found"},
		{"not a dir", []string{"submit", "--server", srv.URL, "--token", token, "-t", dest, filepath.Join(dir, "a.txt")}, "is not a directory"},
		{"bad build arg", []string{"submit", "--server", srv.URL, "--token", token, "-t", dest, "--build-arg", "=novalue", dir}, "want KEY=VALUE"},
		{"no server", []string{"submit", "--server", "", "--token", token, "-t", dest, dir}, "no server given"},
		{"rejected spec", []string{"submit", "--server", srv.URL, "--token", token, "-t", "no-registry-or-tag", dir}, "full image reference"},
		{"unknown build", []string{"status", "--server", srv.URL, "--token", token, "nope"}, "build not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("buildctl-lite %s = %v, want one line naming %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

// TestSubmitNoCache: an identical second submit is answered from the
// gateway's cached result; --no-cache makes kaniko run again.
func TestSubmitNoCache(t *testing.T) {
	cacheDir, err := os.MkdirTemp("", "buildgw-clicache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cacheDir) })
	os.Chmod(cacheDir, 0o711)
	te := testmanager.New(t, testmanager.Options{Kaniko: []kaniko.Option{
		kaniko.WithLayerCache(filepath.Join(cacheDir, "layers")),
		kaniko.WithResultCache(filepath.Join(cacheDir, "results"), 0),
	}})
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, auth, nil))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY a.txt /a.txt\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a\n"), 0o644)
	const cached = "kaniko not run"
	for i, tc := range []struct {
		flags  []string
		cached bool
	}{{nil, false}, {nil, true}, {[]string{"--no-cache"}, false}} {
		args := append([]string{"submit", "--server", srv.URL, "--token", token, "-t", te.Registry + "/cli/cache:1"}, tc.flags...)
		_, stderr, err := run(t, append(args, dir)...)
		if err != nil {
			t.Fatalf("submit #%d %v = %v, want nil\n%s", i+1, tc.flags, err, stderr)
		}
		if got := strings.Contains(stderr, cached); got != tc.cached {
			t.Errorf("submit #%d %v: log says %q = %v, want %v\n%s", i+1, tc.flags, cached, got, tc.cached, stderr)
		}
	}
}

func TestContextCompression(t *testing.T) {
	tests := []struct {
		mode, server string
		want         int
	}{
		{"auto", "http://127.0.0.1:8080", gzip.NoCompression},
		{"auto", "https://localhost:8443", gzip.NoCompression},
		{"auto", "https://[::1]:8443", gzip.NoCompression},
		{"auto", "https://127.8.9.1", gzip.NoCompression},
		{"auto", "https://buildgw.example.com", gzip.BestSpeed},
		{"auto", "https://10.0.0.7:8443", gzip.BestSpeed},
		{"gzip", "http://127.0.0.1:8080", gzip.BestSpeed},
		{"none", "https://buildgw.example.com", gzip.NoCompression},
	}
	for _, tc := range tests {
		if got, err := contextCompression(tc.mode, tc.server); err != nil || got != tc.want {
			t.Errorf("contextCompression(%q, %q) = %d, %v, want %d", tc.mode, tc.server, got, err, tc.want)
		}
	}
	if _, err := contextCompression("zstd", "https://x"); err == nil || !strings.Contains(err.Error(), "--compress") {
		t.Errorf("contextCompression(%q) = %v, want an error naming --compress", "zstd", err)
	}
}

// TestSubmitCompression checks what goes on the wire: a plain tar to a
// gateway on loopback, gzip when asked.
func TestSubmitCompression(t *testing.T) {
	var mu sync.Mutex
	var magic []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "context" {
				b := make([]byte, 2)
				io.ReadFull(p, b)
				mu.Lock()
				magic = b
				mu.Unlock()
				break
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"code":"INVALID_CONTEXT","message":"stop here"}}`)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	for _, tc := range []struct {
		flags []string
		gzip  bool
	}{{nil, false}, {[]string{"--compress", "gzip"}, true}, {[]string{"--compress", "none"}, false}} {
		args := append([]string{"submit", "--server", srv.URL, "--token", token, "-t", "r.example.com/a/b:1"}, tc.flags...)
		if _, _, err := run(t, append(args, dir)...); err == nil || !strings.Contains(err.Error(), "stop here") {
			t.Fatalf("submit %v = %v, want the server's error", tc.flags, err)
		}
		mu.Lock()
		got := bytes.Equal(magic, []byte{0x1f, 0x8b})
		mu.Unlock()
		if got != tc.gzip {
			t.Errorf("submit %v to %s: context starts %x, gzip = %v, want %v", tc.flags, srv.URL, magic, got, tc.gzip)
		}
	}
}

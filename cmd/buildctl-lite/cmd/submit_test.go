package cmd

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api/server"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/runners/kaniko"
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
		{"bad build arg", []string{"submit", "--server", srv.URL, "--token", token, "-t", dest, "--build-arg", "novalue", dir}, "want KEY=VALUE"},
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

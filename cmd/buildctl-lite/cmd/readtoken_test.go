package cmd

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth/oidc"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// syncBuffer is written by a running command while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitGoDockerfile is a build that waits, in a RUN step, until the file
// go appears in its context on the gateway (at most 2 minutes).
func waitGoDockerfile(busybox string) string {
	return "FROM " + busybox + "\n" +
		"RUN echo waiting for go; i=0; while [ ! -e /workspace/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; test -e /workspace/go\n"
}

// releaseBuild creates go in the context of the one build in stateDir's
// workspaces, once it is there.
func releaseBuild(t *testing.T, stateDir string) {
	t.Helper()
	d := testenv.Scale(60 * time.Second)
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		m, _ := filepath.Glob(filepath.Join(stateDir, "*", "*", "context", "Dockerfile"))
		if len(m) == 1 {
			if err := os.WriteFile(filepath.Join(filepath.Dir(m[0]), "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("workspaces with a context after %s: %q, want 1", d, m)
		}
	}
}

// TestSubmitOutlivesIDToken: a CI job's ID token that expires while its
// build runs no longer loses the build's outcome: submit follows the build
// with the build's read token and prints the digest.
func TestSubmitOutlivesIDToken(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{})
	busybox := testenv.Busybox(t, te.Registry)
	iss := testoidc.Start(t, testoidc.Options{})
	const aud = "https://buildgw.example.com"
	authn, err := oidc.New(context.Background(), []oidc.Issuer{{Name: "gitlab", URL: iss.URL, Audiences: []string{aud}, ClockSkew: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, authn, nil))
	t.Cleanup(srv.Close)

	// Long enough for the upload on a busy machine, short for the test.
	lifetime := testenv.Scale(3 * time.Second)
	now := time.Now()
	idToken := iss.MustMint(t, testoidc.With(iss.GitLabClaims(aud, testoidc.GitLab{ProjectPath: "group/app"}, now), func(c map[string]any) {
		c["exp"] = now.Add(lifetime).Unix()
	}))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(waitGoDockerfile(busybox)), 0o644)

	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := New()
		cmd.SetOut(&stdout)
		cmd.SetErr(&stderr)
		cmd.SetArgs([]string{"submit", "--server", srv.URL, "--token", idToken, "-t", te.Registry + "/group/app:1", dir})
		done <- cmd.ExecuteContext(context.Background())
	}()

	// Only once the gateway refuses the ID token may the build go on.
	expiry := lifetime + testenv.Scale(30*time.Second)
	for deadline := time.Now().Add(expiry); ; time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/builds", nil)
		req.Header.Set("Authorization", "Bearer "+idToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ID token is still accepted %s after it was minted to last %s (%d)", expiry, lifetime, resp.StatusCode)
		}
	}
	if !strings.Contains(stderr.String(), "queued") {
		t.Fatalf("the ID token expired before the build was accepted; stderr:\n%s", stderr.String())
	}
	releaseBuild(t, te.StateDir)

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("submit whose ID token expired mid-build = %v, want nil\n%s", err, stderr.String())
		}
	case <-time.After(testenv.Scale(3 * time.Minute)):
		t.Fatalf("submit still running %s on; stderr:\n%s", testenv.Scale(3*time.Minute), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "sha256:") || len(last) != 71 {
		t.Errorf("submit: last stdout line = %q, want the digest", last)
	}
	if !strings.Contains(stderr.String(), "waiting for go") {
		t.Errorf("submit: stderr lacks the RUN step's log:\n%s", stderr.String())
	}
}

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
	"sync/atomic"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testmanager"
)

// runIn runs buildctl-lite with its saved login in configDir and no
// gateway in the environment.
func runIn(t *testing.T, configDir string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	t.Setenv("BUILDGW_URL", "")
	t.Setenv("BUILDGW_TOKEN", "")
	t.Setenv("BUILDGW_CONFIG_DIR", configDir)
	return runStdin(t, stdin, args...)
}

func TestLoginAndJSON(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{})
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, auth, nil))
	t.Cleanup(srv.Close)
	// A second server that records the Authorization headers it gets.
	var leaked []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = append(leaked, r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(other.Close)

	cfg := filepath.Join(t.TempDir(), "buildgw")

	if _, _, err := runIn(t, cfg, "wrong\n", "login", "--server", srv.URL, "--token-stdin"); err == nil || !strings.Contains(err.Error(), "unauthorized: invalid token") {
		t.Errorf("login with a bad token = %v, want unauthorized: invalid token", err)
	}
	if _, err := os.Stat(filepath.Join(cfg, "config.json")); err == nil {
		t.Errorf("a failed login saved a config file")
	}
	stdout, _, err := runIn(t, cfg, token+"\n", "login", "--server", srv.URL, "--token-stdin", "-o", "json")
	if err != nil {
		t.Fatalf("login = %v", err)
	}
	var lout map[string]string
	if err := json.Unmarshal([]byte(stdout), &lout); err != nil || lout["server"] != srv.URL {
		t.Errorf("login -o json = %q (%v), want {server: %s}", stdout, err, srv.URL)
	}
	fi, err := os.Stat(filepath.Join(cfg, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("saved login mode = %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(cfg); di.Mode().Perm() != 0o700 {
		t.Errorf("config directory mode = %v, want 0700", di.Mode().Perm())
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY a.txt /a.txt\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a\n"), 0o644)
	dest := te.Registry + "/cli/json:1"

	// Everything below uses the saved login alone.
	stdout, stderr, err := runIn(t, cfg, "", "submit", "-o", "json", "-t", dest, dir)
	if err != nil {
		t.Fatalf("submit -o json = %v\n%s", err, stderr)
	}
	var b api.Build
	if err := json.Unmarshal([]byte(stdout), &b); err != nil {
		t.Fatalf("submit -o json printed %q: %v", stdout, err)
	}
	if b.Status != api.StatusSucceeded || !strings.HasPrefix(b.Digest, "sha256:") || b.Destinations[0] != dest {
		t.Errorf("submit -o json = %+v, want a succeeded build of %s with its digest", b, dest)
	}

	stdout, _, err = runIn(t, cfg, "", "list", "-o", "json")
	var l api.BuildList
	if err != nil || json.Unmarshal([]byte(stdout), &l) != nil || len(l.Builds) != 1 || l.Builds[0].ID != b.ID {
		t.Errorf("list -o json = %q, %v, want the one build %s", stdout, err, b.ID)
	}
	stdout, _, err = runIn(t, cfg, "", "list")
	if err != nil || !strings.Contains(stdout, b.ID) || !strings.Contains(stdout, "succeeded") {
		t.Errorf("list = %q, %v, want a row of %s", stdout, err, b.ID)
	}
	stdout, _, err = runIn(t, cfg, "", "status", b.ID)
	var st api.Build
	if err != nil || json.Unmarshal([]byte(stdout), &st) != nil || st.Digest != b.Digest {
		t.Errorf("status = %q, %v, want digest %s", stdout, err, b.Digest)
	}
	stdout, _, err = runIn(t, cfg, "", "logs", "-o", "json", b.ID)
	var lg map[string]string
	if err != nil || json.Unmarshal([]byte(stdout), &lg) != nil || lg["id"] != b.ID || !strings.Contains(lg["log"], "COPY a.txt /a.txt") {
		t.Errorf("logs -o json = %q, %v, want the log of %s", stdout, err, b.ID)
	}
	_, _, err = runIn(t, cfg, "", "cancel", "-o", "json", b.ID)
	if err == nil || !strings.Contains(err.Error(), "finished") {
		t.Errorf("cancel of a finished build = %v, want a conflict", err)
	}

	stdout, stderr, err = runIn(t, cfg, "", "version", "-o", "json")
	var v struct{ Client, Server *api.Version }
	if err != nil || json.Unmarshal([]byte(stdout), &v) != nil || v.Client == nil || v.Server == nil || v.Server.Version == "" || v.Server.Kaniko == "" {
		t.Errorf("version -o json = %q, %v, want client and server versions", stdout, err)
	}
	if stderr != "" {
		t.Errorf("version warned %q, want nothing for equal versions", stderr)
	}

	// Completion of build IDs asks the gateway.
	stdout, _, err = runIn(t, cfg, "", "__complete", "status", "")
	if err != nil || !strings.Contains(stdout, b.ID+"\tsucceeded") {
		t.Errorf("completion of status = %q, %v, want %s", stdout, err, b.ID)
	}

	// The saved token goes to the saved server only.
	_, _, err = runIn(t, cfg, "", "list", "--server", other.URL)
	if err == nil || len(leaked) != 1 || leaked[0] != "" {
		t.Errorf("list --server OTHER = %v, sent Authorization %q, want a refusal without the saved token", err, leaked)
	}

	if _, _, err := runIn(t, cfg, "", "logout"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runIn(t, cfg, "", "list"); err == nil || !strings.Contains(err.Error(), "no server given") {
		t.Errorf("list after logout = %v, want no server given", err)
	}
}

func TestFar(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"v1.2.3", "v1.2.9", false},
		{"v1.2.3", "1.3.0", true},
		{"v2.0.0", "v1.9.0", true},
		{"dev", "v1.2.0", false},
		{"v1.2.0-rc.1", "v1.2.0", false},
	}
	for _, tc := range tests {
		if got := far(tc.a, tc.b); got != tc.want {
			t.Errorf("far(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// The version command warns when the gateway is a release apart.
func TestVersionWarns(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/version" || r.Header.Get("Authorization") != "" {
			t.Errorf("version asked %s with Authorization %q, want /version without", r.URL.Path, r.Header.Get("Authorization"))
		}
		json.NewEncoder(w).Encode(api.Version{Version: "v0.1.0", Commit: "abc", Kaniko: "v1.24.0"})
	}))
	t.Cleanup(srv.Close)
	cmd := newRoot(&globals{configDir: t.TempDir(), clientVersion: "v0.2.0"})
	var o, e bytes.Buffer
	cmd.SetOut(&o)
	cmd.SetErr(&e)
	cmd.SetArgs([]string{"version", "--server", srv.URL})
	err := cmd.ExecuteContext(context.Background())
	stdout, stderr := o.String(), e.String()
	if err != nil || !strings.Contains(stdout, "buildgw v0.1.0 (commit abc, kaniko v1.24.0)") || !strings.Contains(stderr, "warning: buildctl-lite v0.2.0 and gateway v0.1.0 differ") {
		t.Errorf("version = %q, %q, %v, want both versions and a warning", stdout, stderr, err)
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	// A port nobody listens on.
	l := httptest.NewServer(http.NotFoundHandler())
	dead := l.URL
	l.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unreachable", []string{"list", "--server", dead, "--token", "x"}, "cannot reach buildgw at " + dead},
		{"version unreachable", []string{"version", "--server", dead}, "asking the gateway for its version: cannot reach buildgw at " + dead},
		{"bad output", []string{"list", "-o", "yaml"}, `--output "yaml": want text or json`},
		{"no Dockerfile", []string{"submit", "--server", dead, "--token", "x", "-t", "r.example.com/a:1", "-f", "Other", dir}, "no Dockerfile: Other not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runIn(t, t.TempDir(), "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("buildctl-lite %s = %v, want one line with %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

func TestAuditExitCode(t *testing.T) {
	_, _, err := runIn(t, t.TempDir(), "", "audit", "../../../socketaudit/testdata/jenkins")
	if ExitCode(err) != exitFindings {
		t.Errorf("audit of a repository with findings: exit %d (%v), want %d", ExitCode(err), err, exitFindings)
	}
	stdout, _, err := runIn(t, t.TempDir(), "", "audit", "-o", "json", "../../../socketaudit/testdata/clean")
	if err != nil || strings.TrimSpace(stdout) != `{
  "findings": []
}` {
		t.Errorf("audit -o json of a clean repository = %q, %v, want no findings and exit 0", stdout, err)
	}
	_, _, err = runIn(t, t.TempDir(), "", "audit", "--host", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if err != nil {
		t.Errorf("audit --host without a socket = %v, want nil", err)
	}
}

// The checked-in reference must be what the commands generate.
func TestDocsUpToDate(t *testing.T) {
	dir := t.TempDir()
	if err := WriteDocs(dir); err != nil {
		t.Fatal(err)
	}
	const checkedIn = "../../../docs/buildctl-lite"
	want, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	have, _ := filepath.Glob(filepath.Join(checkedIn, "*.md"))
	if len(want) != len(have) {
		t.Errorf("docs/buildctl-lite has %d pages, the commands make %d: run go generate ./cmd/buildctl-lite", len(have), len(want))
	}
	for _, p := range want {
		got, _ := os.ReadFile(filepath.Join(checkedIn, filepath.Base(p)))
		exp, _ := os.ReadFile(p)
		if !bytes.Equal(got, exp) {
			t.Errorf("docs/buildctl-lite/%s is out of date: run go generate ./cmd/buildctl-lite", filepath.Base(p))
		}
	}
}

// A full queue makes the CLI wait as Retry-After says, and say so.
func TestQueueFullNotice(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeQueueFull, Message: "build queue full"}})
			return
		}
		json.NewEncoder(w).Encode(api.BuildList{})
	}))
	t.Cleanup(srv.Close)
	stdout, stderr, err := runIn(t, t.TempDir(), "", "list", "--server", srv.URL, "--token", token, "-o", "json")
	if err != nil || calls.Load() != 2 || !strings.Contains(stdout, `"builds"`) {
		t.Fatalf("list against a full queue = %q, %v after %d requests, want the list after 2", stdout, err, calls.Load())
	}
	if want := "queue full; next try in 1s"; !strings.Contains(stderr, want) {
		t.Errorf("list against a full queue: stderr %q, want %q", stderr, want)
	}
}

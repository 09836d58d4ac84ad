package testgateway

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestConfigRoundTrip checks what binary mode relies on: a Config written
// with yaml.Marshal reads back the same through gateway.LoadConfig,
// durations included.
func TestConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("rules:\n  - name: r\n    match: {kind: token}\n    allow: {destinations: [127.0.0.1:5000/**]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Listen = "127.0.0.1:1"
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.JobTimeout = gateway.Duration(90 * time.Second)
	cfg.ShutdownGrace = gateway.Duration(2 * time.Second)
	cfg.Tokens = []gateway.Token{{Name: "ci", SHA256: token.HashToken("secret")}}
	cfg.PolicyFile = policy
	cfg.Registries = map[string]gateway.Registry{"127.0.0.1:5000": {Insecure: true}}
	cfg.Runners.Dind.Disabled = true
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "buildgw.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatalf("LoadConfig(yaml.Marshal(cfg)) = %v\n%s", err, b)
	}
	// Compared as YAML: nil and empty maps read back alike.
	again, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(b) {
		t.Errorf("LoadConfig(yaml.Marshal(cfg)) = \n%s\nwant\n%s", again, b)
	}
	if got.JobTimeout != cfg.JobTimeout {
		t.Errorf("job_timeout read back = %v, want %v", got.JobTimeout, cfg.JobTimeout)
	}
}

// TestStartInProcess starts a gateway from a default Config: its token is
// accepted, others are not, and Stop ends it.
func TestStartInProcess(t *testing.T) {
	cfg := gateway.DefaultConfig()
	cfg.Runners.Kaniko.Executor = testenv.Executor(t)
	cfg.Runners.Dind.Disabled = true
	g := Start(t, cfg)
	if g.Token == "" || g.Registry == "" {
		t.Fatalf("Start() = token %q, registry %q, want both", g.Token, g.Registry)
	}
	for _, tc := range []struct {
		token string
		want  int
	}{{g.Token, http.StatusOK}, {"wrong", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, g.URL+"/v1/builds", nil)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := g.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /v1/builds with token %q = %d, want %d", tc.token[:5], resp.StatusCode, tc.want)
		}
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Exited():
	default:
		t.Error("Exited() not closed after Stop")
	}
}

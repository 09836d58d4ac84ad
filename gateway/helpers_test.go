package gateway_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// testConfig is the least a test gateway runs with: the API on a free
// loopback port, a fresh state directory, the test executor and sandbox
// user, a token "ci" whose secret is tok, and policy as its policy file.
func testConfig(t *testing.T, tok, policy string) gateway.Config {
	t.Helper()
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, pol, policy)
	cfg := gateway.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.StateDir = testenv.StateDir(t)
	cfg.Runners.Kaniko.Executor = testenv.Executor(t)
	cfg.Runners.Kaniko.User = testenv.SandboxUser
	cfg.Tokens = []gateway.Token{{Name: "ci", SHA256: token.HashToken(tok)}}
	cfg.PolicyFile = pol
	return cfg
}

// serve runs g until the test ends, then checks that Serve returns
// without error within 30s.
func serve(t *testing.T, g *gateway.Gateway) {
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve = %v", err)
			}
		case <-time.After(testenv.Scale(30 * time.Second)):
			t.Errorf("Serve did not return %s after its context ended", testenv.Scale(30*time.Second))
		}
	})
}

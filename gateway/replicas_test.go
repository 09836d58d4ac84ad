package gateway_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testpg"
)

// TestSharedStoreConfig: store.postgres_dsn_file must be absolute; a DSN
// the gateway cannot use fails start-up naming the key, and neither the
// error nor the log quotes the DSN's password; a good one starts a
// gateway on the shared store, with no jobs.db in its state directory.
func TestSharedStoreConfig(t *testing.T) {
	testenv.RequireSandbox(t)
	cfg := testConfig(t, "bgw_test_shared", allPolicy)
	cfg.Store.PostgresDSNFile = "relative/dsn"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "store.postgres_dsn_file") {
		t.Errorf("Validate(relative dsn file) = %v, want an error naming store.postgres_dsn_file", err)
	}

	const secret = "s3cret-db-password"
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	writeFile(t, dsnFile, "postgres://buildgw:"+secret+"@/buildgw?host=/nonexistent-socket-dir\n")
	cfg.Store.PostgresDSNFile = dsnFile
	var logs bytes.Buffer
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		serve(t, g)
		t.Fatal("gateway.New(unreachable database) = a gateway, want an error")
	}
	if !strings.Contains(err.Error(), "store.postgres_dsn_file") || strings.Contains(err.Error()+logs.String(), secret) {
		t.Errorf("gateway.New(unreachable database) = %q (log %q), want an error naming store.postgres_dsn_file and no password", err, logs.String())
	}

	cfg = testConfig(t, "bgw_test_shared", allPolicy)
	writeFile(t, dsnFile, testpg.Start(t).NewDatabase(t)+"\n")
	cfg.Store.PostgresDSNFile = dsnFile
	g, err = gateway.New(cfg, discard())
	if err != nil {
		t.Fatalf("gateway.New(shared store) = %v", err)
	}
	serve(t, g)
	resp, err := http.Get(g.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz on the shared store = %s, want 200", resp.Status)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "jobs.db")); err == nil {
		t.Errorf("jobs.db exists in the state directory of a gateway on the shared store")
	}
}

package cmd

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCAFile: a gateway behind a private CA is reached with --ca-file or
// BUILDGW_CA_FILE alone, and a missing or empty file is one clear line.
func TestCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"builds": []}`))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not a certificate\n"), 0o644)
	t.Setenv("SSL_CERT_FILE", "")
	t.Setenv("SSL_CERT_DIR", "")

	list := []string{"list", "--server", srv.URL, "--token", "t"}
	for _, tt := range []struct {
		name  string
		env   string
		args  []string
		code  int
		inErr string
	}{
		{name: "no CA", code: 1, inErr: "certificate"},
		{name: "flag", args: []string{"--ca-file", ca}},
		{name: "env", env: ca},
		{name: "flag over env", env: empty, args: []string{"--ca-file", ca}},
		{name: "missing file", args: []string{"--ca-file", filepath.Join(dir, "nope.pem")}, code: 1, inErr: "--ca-file: reading CA certificates"},
		{name: "no PEM", env: empty, code: 1, inErr: "BUILDGW_CA_FILE: " + empty + " holds no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("BUILDGW_CA_FILE", tt.env)
			_, stderr, code := runMain(context.Background(), t, append(list, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.inErr) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("buildctl-lite list %v (BUILDGW_CA_FILE=%q) = exit %d, %q; want exit %d, one line containing %q", tt.args, tt.env, code, stderr, tt.code, tt.inErr)
			}
		})
	}
}

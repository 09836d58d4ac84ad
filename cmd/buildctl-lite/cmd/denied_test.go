package cmd

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
)

// denyAll refuses every build as a policy rule would.
type denyAll struct{}

func (denyAll) Authorize(context.Context, auth.Identity, *jobs.ValidSpec, *dockerfile.Analysis) (string, jobs.Grant, error) {
	return "r", jobs.Grant{}, &jobs.DeniedError{Rule: "r", Reason: `policy rule "r" does not allow pushing to r.example.com/app:1`}
}

// TestDeniedOnce checks that a refusal reads "denied: " once, not once
// from the server and again from the client.
func TestDeniedOnce(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{})
	a, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, a, nil, server.WithPolicy(denyAll{})))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	_, _, err = runIn(t, t.TempDir(), "", "submit", "--server", srv.URL, "--token", token, "-t", "r.example.com/app:1", dir)
	const want = `denied: policy rule "r" does not allow pushing to r.example.com/app:1`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "denied:") != 1 {
		t.Errorf("submit refused by policy = %v, want one line with %q and \"denied:\" once", err, want)
	}
}

package cmd

import (
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api/server"
	tokenauth "github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
)

func TestBuildArgValues(t *testing.T) {
	env := map[string]string{"SET": "from-env", "EMPTY": "", "EQ": "a=b"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		args    []string
		want    map[string]string
		wantErr bool
	}{
		{args: nil, want: nil},
		{args: []string{"K=V"}, want: map[string]string{"K": "V"}},
		{args: []string{"K="}, want: map[string]string{"K": ""}},
		{args: []string{"K=a=b"}, want: map[string]string{"K": "a=b"}},
		{args: []string{"SET"}, want: map[string]string{"SET": "from-env"}},
		{args: []string{"EMPTY"}, want: map[string]string{"EMPTY": ""}},
		{args: []string{"EQ"}, want: map[string]string{"EQ": "a=b"}},
		// docker build leaves an arg out when its variable is unset, so
		// the Dockerfile's default applies.
		{args: []string{"UNSET"}, want: nil},
		{args: []string{"UNSET", "K=V"}, want: map[string]string{"K": "V"}},
		{args: []string{"SET=given"}, want: map[string]string{"SET": "given"}},
		{args: []string{"=V"}, wantErr: true},
		{args: []string{""}, wantErr: true},
	}
	for _, tc := range tests {
		got, err := buildArgValues(tc.args, lookup)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "--build-arg") {
				t.Errorf("buildArgValues(%q) = %v, %v, want an error naming --build-arg", tc.args, got, err)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("buildArgValues(%q) = %v, %v, want %v", tc.args, got, err, tc.want)
		}
	}
}

// TestSubmitBuildArgFromEnv: --build-arg NAME takes $NAME, and an unset
// NAME is left out, so the Dockerfile's default applies (were it sent
// empty, the gateway would refuse the empty build arg in FROM).
func TestSubmitBuildArgFromEnv(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{})
	auth, err := tokenauth.New([]tokenauth.Token{{Name: "ci", SHA256: tokenauth.HashToken(token)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, auth, nil))
	t.Cleanup(srv.Close)
	busybox := testenv.Busybox(t, te.Registry)

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nARG TAG=latest\nFROM ${BASE}:${TAG}\n"), 0o644)
	t.Setenv("BASE", strings.TrimSuffix(busybox, ":latest"))
	t.Setenv("TAG", "") // restored after the test
	os.Unsetenv("TAG")
	stdout, stderr, err := run(t, "submit", "--server", srv.URL, "--token", token, "-t", te.Registry+"/cli/envarg:1",
		"--build-arg", "BASE", "--build-arg", "TAG", dir)
	if err != nil {
		t.Fatalf("submit --build-arg BASE --build-arg TAG (BASE set, TAG unset) = %v, want nil\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "sha256:") {
		t.Errorf("submit: stdout = %q, want the digest", stdout)
	}
}

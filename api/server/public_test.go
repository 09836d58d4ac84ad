package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/examples/gitlab"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/version"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The routes a CI job uses before it has a client or presents a token.
func TestPublicRoutes(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{NoWorkers: true})
	auth, err := token.New([]token.Token{{Name: "ci", SHA256: token.HashToken("t")}})
	if err != nil {
		t.Fatal(err)
	}
	dl := t.TempDir()
	linux := []byte("linux-arm64-binary")
	host := []byte("host-binary")
	win := []byte("windows-binary")
	os.WriteFile(filepath.Join(dl, "buildctl-lite-linux-arm64"), linux, 0o755)
	os.WriteFile(filepath.Join(dl, "buildctl-lite"), host, 0o755)
	os.WriteFile(filepath.Join(dl, "buildctl-lite-windows-amd64.exe"), win, 0o755)
	// The release's checksum wins over the file's (a release is checked
	// against what it published).
	os.WriteFile(filepath.Join(dl, "SHA256SUMS"), []byte(sha(linux)+"  buildctl-lite-linux-arm64\n"), 0o644)
	srv := httptest.NewServer(server.New(te.M, auth, nil, server.WithDownloads(dl)))
	t.Cleanup(srv.Close)
	bare := httptest.NewServer(server.New(te.M, auth, nil))
	t.Cleanup(bare.Close)

	hostName := "buildctl-lite-" + runtime.GOOS + "-" + runtime.GOARCH
	hostPath := "/dl/buildctl-lite/" + runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		url    string
		status int
		body   string
	}{
		{srv.URL + "/ci/gitlab/buildgw.yml", 200, string(gitlab.Template)},
		{srv.URL + "/dl/buildctl-lite/linux/arm64", 200, string(linux)},
		{srv.URL + "/dl/buildctl-lite/linux/arm64.sha256", 200, sha(linux) + "  buildctl-lite-linux-arm64\n"},
		{srv.URL + "/dl/buildctl-lite/windows/amd64", 200, string(win)},
		{srv.URL + "/dl/buildctl-lite/windows/amd64.sha256", 200, sha(win) + "  buildctl-lite-windows-amd64.exe\n"},
		{srv.URL + hostPath, 200, string(host)},
		{srv.URL + hostPath + ".sha256", 200, sha(host) + "  " + hostName + "\n"},
		{srv.URL + "/dl/buildctl-lite/plan9/mips", 404, ""},
		{srv.URL + "/dl/buildctl-lite/..%2f..%2fetc/passwd", 404, ""},
		{srv.URL + "/dl/buildctl-lite/linux/ARM64", 404, ""},
		{bare.URL + "/dl/buildctl-lite/linux/arm64", 404, ""},
	}
	for _, tc := range tests {
		r := do(t, http.MethodGet, tc.url, "", "", nil)
		if r.status != tc.status || (tc.status == 200 && string(r.body) != tc.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tc.url, r.status, r.body, tc.status, tc.body)
		}
		if tc.status == 404 {
			if e := r.errorBody(t); e.Error.Code != api.CodeNotFound {
				t.Errorf("GET %s: error %+v, want NOT_FOUND", tc.url, e)
			}
		}
	}

	resp, err := http.Get(srv.URL + "/version")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v api.Version
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 ||
		v != (api.Version{Version: version.Version, Commit: version.Commit(), Kaniko: version.Kaniko()}) {
		t.Errorf("GET /version = %d %+v (%v), want the version package's values", resp.StatusCode, v, err)
	}
}

package gateway

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadDockerConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	auth := base64.StdEncoding.EncodeToString([]byte("pusher:s3cret:with:colons"))
	got, err := readDockerConfig(write(`{"auths": {
		"registry.example.com": {"auth": "` + auth + `"},
		"https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"},
		"localhost:5000": {"username": "u", "password": "p"}}}`))
	if err != nil {
		t.Fatalf("readDockerConfig = %v, want nil", err)
	}
	want := map[string][2]string{
		"registry.example.com": {"pusher", "s3cret:with:colons"},
		"index.docker.io":      {"hub", "hubpw"},
		"localhost:5000":       {"u", "p"},
	}
	for host, w := range want {
		if r, ok := got[host]; !ok || r.Username != w[0] || r.Password != w[1] {
			t.Errorf("readDockerConfig()[%q] = %+v, want %s:%s", host, r, w[0], w[1])
		}
	}

	for _, bad := range []struct{ content, want string }{
		{`{"auths": {"r.example.com": {"auth": "!!!"}}}`, "not base64"},
		{`{"auths": {"r.example.com": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("nocolon")) + `"}}}`, "not user:password"},
		{`not json`, "decoding"},
	} {
		if _, err := readDockerConfig(write(bad.content)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("readDockerConfig(%q) = %v, want an error naming %q", bad.content, err, bad.want)
		}
	}
}

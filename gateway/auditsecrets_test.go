package gateway

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/audit"
)

// TestAuditRedactsRegistryPasswords checks that every registry password
// the gateway reads (a registry's password_file, its sandbox_pull account,
// the Docker config) is redacted from the audit log wherever a record
// would carry it.
func TestAuditRedactsRegistryPasswords(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const (
		pushPW   = "push-password-1"
		pullPW   = "pull-password-2"
		dockerPW = "docker-config-password-3"
	)
	cfg := Config{
		DockerConfig: write("config.json", `{"auths": {"other.example.com": {"auth": "`+
			base64.StdEncoding.EncodeToString([]byte("u:"+dockerPW))+`"}}}`),
		Registries: map[string]Registry{"registry.example.com": {
			Username:     "pusher",
			PasswordFile: write("push-pw", pushPW+"\n"),
			SandboxPull:  &PullAccount{Username: "puller", PasswordFile: write("pull-pw", pullPW)},
		}},
	}
	_, _, _, secrets, err := cfg.registryAccess()
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{pushPW, pullPW, dockerPW} {
		if !slices.Contains(secrets, pw) {
			t.Errorf("registryAccess() secrets = %d values, want one to be the password %q", len(secrets), pw)
		}
	}

	file := filepath.Join(dir, "audit.log")
	l, err := newAuditLog(Audit{File: file}, secrets)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Log(audit.Record{Event: audit.EventBuild, Reason: "pushing failed: 401 for pusher:" + pushPW,
		Error: "fetching base: " + pullPW + " refused; " + dockerPW}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{pushPW, pullPW, dockerPW} {
		if strings.Contains(string(b), pw) {
			t.Errorf("audit record = %s, want the password %q redacted", b, pw)
		}
	}
	if !strings.Contains(string(b), "[REDACTED]") {
		t.Errorf("audit record = %s, want [REDACTED] in place of the passwords", b)
	}
}

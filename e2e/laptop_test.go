package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
)

// laptop runs buildctl-lite as a person would: no BUILDGW_* variables, a
// home directory of its own, the gateway's CA trusted.
func (g *gateway) laptop(t *testing.T, home, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(5*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(g.bin, "buildctl-lite"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDGW_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home, "SSL_CERT_FILE="+g.caFile)
	cmd.Stdin = strings.NewReader(stdin)
	return runOut(t, cmd)
}

// TestLaptop is the laptop flow with the real binaries: login once, then
// submit, status, list, logs and version with the saved login, and a
// one-line error for each way a submission commonly goes wrong.
func TestLaptop(t *testing.T) {
	g := startGateway(t)
	home := t.TempDir()

	_, stderr, code := g.laptop(t, home, g.tokens["ci"]+"\n", "login", "--server", g.url, "--token-stdin")
	if code != 0 {
		t.Fatalf("login = exit %d, want 0\n%s", code, stderr)
	}
	cfg := filepath.Join(home, ".config", "buildgw", "config.json")
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved login %s: %v, want mode 0600", cfg, err)
	}

	ref := g.dest.Host + "/team/laptop:1"
	stdout, stderr, code := g.laptop(t, home, "", "submit", "-t", ref, "--build-arg", "BASE="+g.busybox, "testdata/simple")
	if code != 0 {
		t.Fatalf("submit with the saved login = exit %d\n%s", code, stderr)
	}
	digest := lastLine(stdout)
	if d, _ := g.pull(t, ref).Digest(); d.String() != digest {
		t.Errorf("submit printed %s, %s has %s", digest, ref, d)
	}
	stdout, _, _ = g.laptop(t, home, "", "list", "-o", "json")
	var l api.BuildList
	if err := json.Unmarshal([]byte(stdout), &l); err != nil || len(l.Builds) == 0 || l.Builds[0].Digest != digest {
		t.Fatalf("list -o json = %q (%v), want the build of %s first", stdout, err, digest)
	}
	id := l.Builds[0].ID
	stdout, _, _ = g.laptop(t, home, "", "status", "-o", "json", id)
	var b api.Build
	if err := json.Unmarshal([]byte(stdout), &b); err != nil || b.Status != api.StatusSucceeded {
		t.Errorf("status -o json = %q (%v), want succeeded", stdout, err)
	}
	stdout, _, code = g.laptop(t, home, "", "logs", "-f", id)
	if code != 0 || !strings.Contains(stdout, "RUN echo retried") {
		t.Errorf("logs -f = exit %d %q, want the build log", code, stdout)
	}
	stdout, stderr, code = g.laptop(t, home, "", "version", "-o", "json")
	var v struct{ Client, Server api.Version }
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v.Server.Kaniko == "" || v.Server.Version != v.Client.Version {
		t.Errorf("version -o json = exit %d %q %q, want both versions", code, stdout, stderr)
	}

	big := t.TempDir()
	os.WriteFile(filepath.Join(big, "Dockerfile"), []byte("FROM scratch\nCOPY . /\n"), 0o644)
	f, err := os.Create(filepath.Join(big, "blob"))
	if err != nil {
		t.Fatal(err)
	}
	// Over the gateway's 64 MiB limit, though it compresses to little.
	f.Truncate(65 << 20)
	f.Close()

	// A port that refuses connections.
	dead := "https://" + testenv.FreeAddr(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unreachable", []string{"list", "--server", dead}, "cannot reach buildgw at " + dead},
		{"401", []string{"submit", "--token", "wrong", "-t", ref, "testdata/simple"}, "unauthorized: invalid token"},
		{"403", []string{"submit", "-t", g.dest.Host + "/elsewhere/app:1", "--build-arg", "BASE=" + g.busybox, "testdata/simple"},
			`denied: policy rule "test-tokens" does not allow pushing to ` + g.dest.Host + "/elsewhere/app:1"},
		{"too large", []string{"submit", "-t", g.dest.Host + "/team/big:1", big}, "context too large: "},
		{"no Dockerfile", []string{"submit", "-t", ref, "-f", "nope.Dockerfile", "testdata/simple"}, "no Dockerfile: nope.Dockerfile not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := g.laptop(t, home, "", tc.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || stdout != "" {
				t.Errorf("buildctl-lite %s = exit %d, stdout %q, stderr %q; want a failure with one line containing %q",
					strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
			}
		})
	}

	if _, _, code := g.laptop(t, home, "", "logout"); code != 0 {
		t.Errorf("logout = exit %d", code)
	}
	if _, err := os.Stat(cfg); !os.IsNotExist(err) {
		t.Errorf("saved login after logout: %v, want it gone", err)
	}
}

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// oidcAud is the audience the GitLab job's id_token names: the gateway.
const oidcAud = "https://buildgw.e2e.test"

// startGatewayOIDC starts the real buildgw, serving TLS, that accepts JWTs
// of the GitLab-shaped issuer gitlab, with a policy that only
// lets a protected ref of a project push to DEST/{project_path} from
// the base registry.
func startGatewayOIDC(t *testing.T, gitlab *testoidc.Issuer) *gateway {
	return startGatewayWith(t, gatewayOptions{
		config: func(_ *gateway, c *buildgw.Config) {
			c.OIDCIssuers = append(c.OIDCIssuers, buildgw.OIDCIssuer{Name: "gitlab", URL: gitlab.URL, Audiences: []string{oidcAud}, Algorithms: []string{"RS256"}})
		},
		policy: func(g *gateway) testgateway.Policy {
			return testgateway.Policy{Rules: []testgateway.Rule{{
				Name:  "gitlab-protected",
				Match: map[string]string{"kind": "oidc", "issuer": gitlab.URL, "ref_protected": "true"},
				Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/{project_path}"}, From: []string{g.base.Host}},
			}}}
		},
	})
}

// TestOIDCGitLab builds with a GitLab CI id_token, as a job of project
// group/app on a protected branch would.
func TestOIDCGitLab(t *testing.T) {
	gitlab := testoidc.Start(t, testoidc.Options{})
	g := startGatewayOIDC(t, gitlab)
	now := time.Now()
	claims := gitlab.GitLabClaims(oidcAud, testoidc.GitLab{ProjectPath: "group/app", Protected: true}, now)
	claims["exp"] = now.Add(30 * time.Minute).Unix()
	tok := gitlab.MustMint(t, claims)
	const identity = "gitlab:project_path:group/app:ref_type:branch:ref:main"

	t.Run("own project", func(t *testing.T) {
		ref := g.dest.Host + "/group/app:1"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+g.busybox, "testdata/simple")
		if code != 0 {
			t.Fatalf("submit = exit %d, want 0\nstderr:\n%s", code, stderr)
		}
		digest := lastLine(stdout)
		if !strings.HasPrefix(digest, "sha256:") {
			t.Fatalf("last stdout line = %q, want a digest", digest)
		}
		img := g.pull(t, ref)
		if d, _ := img.Digest(); d.String() != digest {
			t.Errorf("digest of %s = %s, want %s (the printed one)", ref, d, digest)
		}
		if got := files(t, img)["r.txt"].content; got != "retried\n" {
			t.Errorf("file r.txt = %q, want %q", got, "retried\n")
		}
	})

	t.Run("other project", func(t *testing.T) {
		before := g.listBuilds(t, tok)
		ref := g.dest.Host + "/group/other:1"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+g.busybox, "testdata/simple")
		if code == 0 {
			t.Fatalf("submit to another project's repository = exit 0, want a refusal\nstdout:\n%s", stdout)
		}
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if len(lines) != 1 {
			t.Errorf("stderr has %d lines, want one:\n%s", len(lines), stderr)
		}
		line := lines[len(lines)-1]
		t.Logf("refusal on stderr: %s", line)
		for _, want := range []string{`policy rule "gitlab-protected"`, "does not allow pushing to " + ref} {
			if !strings.Contains(line, want) {
				t.Errorf("stderr %q lacks %q", line, want)
			}
		}
		if strings.TrimSpace(stdout) != "" {
			t.Errorf("stdout = %q, want nothing", stdout)
		}
		if after := g.listBuilds(t, tok); len(after) != len(before) {
			t.Errorf("builds of %s: %d before, %d after the refusal: want no new build", identity, len(before), len(after))
		}
		g.waitNoWorkspaces(t)

		// The refusal is audited with the rule and the identity.
		var last map[string]any
		f, err := os.Open(g.auditFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r map[string]any
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("audit line %q: %v", sc.Text(), err)
			}
			if r["event"] == "authz" {
				last = r
			}
		}
		id, _ := last["identity"].(map[string]any)
		if last["decision"] != "deny" || last["rule"] != "gitlab-protected" || id["name"] != identity ||
			!strings.Contains(fmt.Sprint(last["reason"]), ref) {
			t.Errorf("last authz audit record = %v, want a deny by gitlab-protected of %s for %s", last, ref, identity)
		}
		b, _ := os.ReadFile(g.auditFile)
		if strings.Contains(string(b), tok) || strings.Contains(string(b), strings.Split(tok, ".")[2]) {
			t.Errorf("the audit log holds the token")
		}
		if strings.Contains(string(b), g.dest.Password) {
			t.Errorf("the audit log holds the registry password")
		}
	})
}

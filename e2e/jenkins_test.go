package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// TestJenkinsStep runs the shared library's buildgwBuild step with
// Debian's groovy and a stub of the pipeline DSL in which sh really runs,
// against a live gateway: the step downloads buildctl-lite from the gateway,
// verifies it, builds with the token of a Jenkins secret-text credential
// and returns the digest of the pushed image.
func TestJenkinsStep(t *testing.T) {
	jenkins := testoidc.Start(t, testoidc.Options{})
	g := startGatewayWith(t, gatewayOptions{
		config: func(g *gateway, c *buildgw.Config) {
			c.OIDCIssuers = append(c.OIDCIssuers, buildgw.OIDCIssuer{Name: "jenkins", URL: jenkins.URL, Audiences: []string{g.url}})
		},
		policy: func(g *gateway) testgateway.Policy {
			return testgateway.Policy{Rules: []testgateway.Rule{{
				Name:  "test-tokens",
				Match: map[string]string{"kind": "token"},
				Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/team/**"}, From: []string{g.base.Host}},
			}, {
				Name:  "jenkins-jobs",
				Match: map[string]string{"kind": "oidc", "issuer": jenkins.URL},
				Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/jenkins/**"}, From: []string{g.base.Host}},
			}}}
		},
	})
	oidcToken := jenkins.MustMint(t, jenkins.JenkinsClaims(g.url, "https://jenkins.example.com/job/app/", 7, time.Now()))
	home := javaHome(t)
	vars := filepath.Join(testenv.ModuleRoot(t), "examples", "jenkins", "vars")
	harness, err := filepath.Abs("testdata/jenkins/harness.groovy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(vars, "buildgwBuild.txt")); err != nil {
		t.Errorf("the step has no help page: %v", err)
	}

	step := func(t *testing.T, context string, args map[string]any) (string, int) {
		t.Helper()
		workspace := t.TempDir()
		for _, f := range []string{"Dockerfile"} {
			copyFile(t, filepath.Join("testdata", context, f), filepath.Join(workspace, f))
		}
		args["context"] = workspace
		cfg := map[string]any{
			"args": args,
			// What a Jenkins agent's environment would hold; the gateway's
			// CA is trusted by the agent.
			"env": map[string]string{
				"BUILDGW_URL":    g.url,
				"PATH":           os.Getenv("PATH"),
				"SSL_CERT_FILE":  g.caFile,
				"CURL_CA_BUNDLE": g.caFile,
			},
			"credentials": map[string]string{"buildgw-token": g.tokens["ci"], "buildgw-oidc": oidcToken},
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(path, b, 0o600)
		return run(t, workspace, []string{"JAVA_HOME=" + home}, "groovy", harness, vars, "buildgwBuild", path)
	}

	t.Run("returns the digest", func(t *testing.T) {
		ref := g.dest.Host + "/team/jenkins:1"
		out, code := step(t, "simple", map[string]any{
			"tags":      []string{ref},
			"buildArgs": map[string]string{"BASE": g.busybox},
		})
		if code != 0 {
			t.Fatalf("buildgwBuild = exit %d, want 0\n%s", code, out)
		}
		digest := resultLine(out, "RESULT=")
		img := g.pull(t, ref)
		if d, _ := img.Digest(); d.String() != digest || digest == "" {
			t.Errorf("buildgwBuild returned %q, want the digest of %s, %s\n%s", digest, ref, d, out)
		}
		if got := files(t, img)["r.txt"].content; got != "retried\n" {
			t.Errorf("%s: r.txt = %q, want %q", ref, got, "retried\n")
		}
		if !strings.Contains(out, ": OK") {
			t.Errorf("the step did not verify the downloaded client:\n%s", out)
		}
		if strings.Contains(out, g.tokens["ci"]) {
			t.Errorf("the step printed the token")
		}
	})

	// An oidc-provider ID token credential binds the same way.
	t.Run("oidc-provider id token", func(t *testing.T) {
		ref := g.dest.Host + "/jenkins/app:7"
		out, code := step(t, "simple", map[string]any{
			"credentialsId": "buildgw-oidc",
			"tags":          []string{ref},
			"buildArgs":     map[string]string{"BASE": g.busybox},
		})
		digest := resultLine(out, "RESULT=")
		if code != 0 {
			t.Fatalf("buildgwBuild with an ID token = exit %d, want 0\n%s", code, out)
		}
		if d, _ := g.pull(t, ref).Digest(); d.String() != digest {
			t.Errorf("buildgwBuild returned %q, want the digest of %s, %s", digest, ref, d)
		}
	})

	// The same build again is answered from the project's cache, unless
	// noCache asks for every step afresh.
	t.Run("noCache", func(t *testing.T) {
		const cached = "every step cached"
		// The first build fills the cache (if no earlier subtest has).
		for i, noCache := range []bool{false, false, true} {
			ref := fmt.Sprintf("%s/team/jenkins:nocache-%d", g.dest.Host, i)
			out, code := step(t, "simple", map[string]any{
				"tags":      []string{ref},
				"buildArgs": map[string]string{"BASE": g.busybox},
				"noCache":   noCache,
			})
			if code != 0 {
				t.Fatalf("buildgwBuild(noCache: %v) = exit %d, want 0\n%s", noCache, code, out)
			}
			if got := strings.Contains(out, cached); i > 0 && got == noCache {
				t.Errorf("buildgwBuild(noCache: %v): log says %q = %v, want %v\n%s", noCache, cached, got, !noCache, out)
			}
			if got := files(t, g.pull(t, ref))["r.txt"].content; got != "retried\n" {
				t.Errorf("%s: r.txt = %q, want %q", ref, got, "retried\n")
			}
		}
	})

	t.Run("failing build raises error", func(t *testing.T) {
		ref := g.dest.Host + "/team/jenkins:fail"
		out, code := step(t, "fail", map[string]any{
			"tags":      ref,
			"buildArgs": []string{"BASE=" + g.busybox},
		})
		msg := resultLine(out, "ERROR=")
		if code != 2 || !strings.Contains(msg, "the build of "+ref+" failed") {
			t.Fatalf("buildgwBuild of a failing Dockerfile = exit %d, error %q, want exit 2 with an error naming %s\n%s", code, msg, ref, out)
		}
		if !strings.Contains(out, "marker-7f3a") {
			t.Errorf("the console lacks the build log:\n%s", out)
		}
	})

	t.Run("unknown credential", func(t *testing.T) {
		out, code := step(t, "simple", map[string]any{"tags": []string{g.dest.Host + "/team/jenkins:2"}, "credentialsId": "nope"})
		if msg := resultLine(out, "ERROR="); code != 2 || !strings.Contains(msg, "nope") {
			t.Errorf("buildgwBuild with an unknown credential = exit %d, error %q, want exit 2 naming it\n%s", code, msg, out)
		}
	})
}

// resultLine returns what follows prefix on the last line that starts
// with it.
func resultLine(out, prefix string) string {
	var v string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			v = strings.TrimPrefix(l, prefix)
		}
	}
	return strings.TrimSpace(v)
}

package e2e

import (
	"bytes"
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
	"gopkg.in/yaml.v3"
)

// TestJenkinsStep runs the shared library's buildgwBuild step with
// Debian's groovy and a stub of the pipeline DSL in which sh really runs,
// against a live gateway: the step downloads buildctl-lite from the gateway,
// verifies it, builds with the token of a Jenkins secret-text credential
// and returns the digest of the pushed image. ID tokens of the
// oidc-provider plugin are judged by the Jenkins rules of
// examples/policy/policy.yaml, so a multibranch project's pull-request
// jobs cannot push. The agent trusts the gateway's private CA only through
// the step's caFile.
func TestJenkinsStep(t *testing.T) {
	jenkins := testoidc.Start(t, testoidc.Options{Prefix: "/oidc"})
	g := startGatewayWith(t, gatewayOptions{
		config: func(g *gateway, c *buildgw.Config) {
			c.OIDCIssuers = append(c.OIDCIssuers, buildgw.OIDCIssuer{Name: "jenkins", URL: jenkins.URL, Audiences: []string{g.url}})
		},
		policyFile: func(g *gateway) []byte {
			example := bytes.ReplaceAll(examplePolicy(t, g, "https://gitlab.example.com"), []byte("https://jenkins.example.com/oidc"), []byte(jenkins.URL))
			return withRules(t, example, testgateway.Rule{
				Name:  "test-tokens",
				Match: map[string]string{"kind": "token"},
				Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/team/**"}, From: []string{g.base.Host}},
			})
		},
	})
	jobToken := func(job string) string {
		return jenkins.MustMint(t, jenkins.JenkinsClaims(g.url, "https://jenkins.example.com/job/"+job+"/", 7, time.Now()))
	}
	home := javaHome(t)
	vars := filepath.Join(testenv.ModuleRoot(t), "examples", "jenkins", "vars")
	harness, err := filepath.Abs("testdata/jenkins/harness.groovy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(vars, "buildgwBuild.txt")); err != nil {
		t.Errorf("the step has no help page: %v", err)
	}

	tmp := t.TempDir() // the agent's TMPDIR: what the step leaves behind
	type agent struct {
		path  string // PATH; default this host's
		token string // the ID token credential buildgw-oidc
		unix  *bool
	}
	stepOn := func(t *testing.T, a agent, context string, args map[string]any) (string, int) {
		t.Helper()
		workspace := t.TempDir()
		for _, f := range []string{"Dockerfile"} {
			copyFile(t, filepath.Join("testdata", context, f), filepath.Join(workspace, f))
		}
		args["context"] = workspace
		if _, ok := args["caFile"]; !ok {
			args["caFile"] = g.caFile
		}
		if a.path == "" {
			a.path = os.Getenv("PATH")
		}
		if a.token == "" {
			a.token = jobToken("app/job/main")
		}
		cfg := map[string]any{
			"args": args,
			// What a Jenkins agent's environment would hold; the gateway's
			// private CA is given to the step alone.
			"env":         map[string]string{"BUILDGW_URL": g.url, "PATH": a.path, "TMPDIR": tmp},
			"credentials": map[string]string{"buildgw-token": g.tokens["ci"], "buildgw-oidc": a.token},
		}
		if a.unix != nil {
			cfg["unix"] = *a.unix
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(path, b, 0o600)
		out, code := run(t, workspace, []string{"JAVA_HOME=" + home, "SSL_CERT_FILE=", "CURL_CA_BUNDLE="}, "groovy", harness, vars, "buildgwBuild", path)
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("buildgwBuild left %d entries in TMPDIR (the downloaded client?), want none", len(left))
			for _, e := range left {
				os.RemoveAll(filepath.Join(tmp, e.Name()))
			}
		}
		return out, code
	}
	step := func(t *testing.T, context string, args map[string]any) (string, int) {
		t.Helper()
		return stepOn(t, agent{}, context, args)
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

	// An oidc-provider ID token credential binds the same way; the main
	// branch job of the multibranch project "app" may push any tag.
	t.Run("oidc-provider id token", func(t *testing.T) {
		ref := g.dest.Host + "/team/app:7"
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

	// Branch and pull-request jobs of a multibranch project, as the
	// example policy's Jenkins rules judge them: refusals are the step's
	// error, naming the rule.
	t.Run("branches and pull requests", func(t *testing.T) {
		for _, tt := range []struct {
			job, tag string
			rule     string // "" if allowed
		}{
			{"app/job/feature-x", "dev-7", ""},
			{"app/job/feature-x", "latest", "jenkins-app-branches"},
			{"app/job/PR-7", "dev-7", "jenkins-pull-requests"},
		} {
			ref := g.dest.Host + "/team/app:" + tt.tag
			out, code := stepOn(t, agent{token: jobToken(tt.job)}, "simple", map[string]any{
				"credentialsId": "buildgw-oidc",
				"tags":          []string{ref},
				"buildArgs":     map[string]string{"BASE": g.busybox},
			})
			msg := resultLine(out, "ERROR=")
			if tt.rule == "" {
				if code != 0 {
					t.Errorf("buildgwBuild as job %s to %s = exit %d (%s), want success\n%s", tt.job, ref, code, msg, out)
				}
				continue
			}
			if want := fmt.Sprintf("denied: policy rule %q", tt.rule); code != 2 || !strings.Contains(msg, want) || !strings.HasPrefix(msg, "buildgwBuild: ") {
				t.Errorf("buildgwBuild as job %s to %s = exit %d, error %q; want exit 2, the step's error naming %s\n%s", tt.job, ref, code, msg, want, out)
			}
		}
	})

	t.Run("agent without curl", func(t *testing.T) {
		ref := g.dest.Host + "/team/jenkins:wget"
		out, code := stepOn(t, agent{path: toolDir(t, "curl", nil)}, "simple", map[string]any{
			"tags": []string{ref}, "buildArgs": map[string]string{"BASE": g.busybox},
		})
		if code != 0 {
			t.Fatalf("buildgwBuild on an agent without curl = exit %d, want 0 (wget)\n%s", code, out)
		}
		if d, _ := g.pull(t, ref).Digest(); d.String() != resultLine(out, "RESULT=") {
			t.Errorf("buildgwBuild returned %q, want the digest of %s, %s", resultLine(out, "RESULT="), ref, d)
		}
	})

	t.Run("download error is the step's", func(t *testing.T) {
		// A Mac agent: the gateway serves only its own platform and says so.
		uname := map[string]string{"uname": "#!/bin/sh\ncase \"$1\" in -s) echo Darwin ;; -m) echo arm64 ;; *) echo Darwin ;; esac\n"}
		for _, without := range []string{"", "curl"} {
			out, code := stepOn(t, agent{path: toolDir(t, without, uname)}, "simple", map[string]any{"tags": []string{g.dest.Host + "/team/jenkins:mac"}})
			msg := resultLine(out, "ERROR=")
			if code != 2 || !strings.Contains(msg, "buildgwBuild: could not download buildctl-lite from "+g.url) {
				t.Errorf("buildgwBuild on darwin/arm64 (without %q) = exit %d, error %q; want the step's download error\n%s", without, code, msg, out)
			}
			if want := "this gateway has no buildctl-lite for darwin/arm64"; !strings.Contains(out, want) {
				t.Errorf("buildgwBuild on darwin/arm64 (without %q): console lacks the gateway's answer %q\n%s", without, want, out)
			}
		}
	})

	t.Run("no CA, no trust", func(t *testing.T) {
		out, code := step(t, "simple", map[string]any{"tags": []string{g.dest.Host + "/team/jenkins:ca"}, "caFile": ""})
		if msg := resultLine(out, "ERROR="); code != 2 || !strings.Contains(msg, "could not download buildctl-lite") {
			t.Errorf("buildgwBuild without the gateway's CA = exit %d, error %q; want the download refused", code, msg)
		}
	})

	t.Run("windows agent", func(t *testing.T) {
		no := false
		out, code := stepOn(t, agent{unix: &no}, "simple", map[string]any{"tags": []string{g.dest.Host + "/team/jenkins:win"}})
		if msg := resultLine(out, "ERROR="); code != 2 || !strings.Contains(msg, "Windows agents are not supported") {
			t.Errorf("buildgwBuild on a Windows agent = exit %d, error %q; want a clear refusal", code, msg)
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

// withRules returns the policy file pol with rules put before its own, so
// that they are matched first.
func withRules(t *testing.T, pol []byte, rules ...testgateway.Rule) []byte {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(pol, &doc); err != nil {
		t.Fatalf("reading policy: %v", err)
	}
	var extra yaml.Node
	if err := extra.Encode(rules); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "rules" {
			seq := root.Content[i+1]
			seq.Content = append(extra.Content, seq.Content...)
			b, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatal("policy has no rules")
	return nil
}

package e2e

import (
	"fmt"
	"net/http"
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

// TestGitLabCI runs real GitLab CI pipelines with gitlab-ci-local's shell
// executor, with no Docker anywhere: the project includes the template the
// gateway serves (include: remote) or the CI/CD component (with inputs),
// the job fetches buildctl-lite from the gateway, verifies its checksum
// and builds with the job's GitLab ID token. gitlab-ci-local mints no ID
// tokens, so the test mints one from its own issuer and passes it in.
func TestGitLabCI(t *testing.T) {
	gitlab := testoidc.Start(t, testoidc.Options{})
	g := startGatewayWith(t, gatewayOptions{
		// The job's id_tokens name the gateway's URL as the audience.
		config: func(g *gateway, c *buildgw.Config) {
			c.OIDCIssuers = append(c.OIDCIssuers, buildgw.OIDCIssuer{Name: "gitlab", URL: gitlab.URL, Audiences: []string{g.url}})
		},
		policy: func(g *gateway) testgateway.Policy {
			return testgateway.Policy{Rules: []testgateway.Rule{{
				Name:  "gitlab-protected",
				Match: map[string]string{"kind": "oidc", "issuer": gitlab.URL, "ref_protected": "true"},
				Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/{project_path}"}, From: []string{g.base.Host}},
			}}}
		},
	})
	glci := gitlabCILocal(t)
	now := time.Now()
	claims := gitlab.GitLabClaims(g.url, testoidc.GitLab{ProjectPath: "group/app", Protected: true}, now)
	claims["exp"] = now.Add(30 * time.Minute).Unix()
	idToken := gitlab.MustMint(t, claims)

	// The template the gateway serves is the one in examples/gitlab.
	code, served := g.do(t, http.MethodGet, "/ci/gitlab/buildgw.yml", "", "", nil)
	want, _ := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "examples", "gitlab", "buildgw.yml"))
	if code != http.StatusOK || string(served) != string(want) {
		t.Fatalf("GET /ci/gitlab/buildgw.yml = %d, %d bytes, want 200 and examples/gitlab/buildgw.yml", code, len(served))
	}

	project := t.TempDir()
	copyFile(t, "testdata/simple/Dockerfile", filepath.Join(project, "Dockerfile"))
	copyFile(t, "testdata/fail/Dockerfile", filepath.Join(project, "Dockerfile.fail"))
	copyFile(t, filepath.Join(testenv.ModuleRoot(t), "examples", "gitlab", "templates", "buildgw", "template.yml"),
		filepath.Join(project, "templates", "buildgw", "template.yml"))
	os.WriteFile(filepath.Join(project, ".dockerignore"), []byte(".gitlab-ci-local\n.git\n"), 0o644)
	image := g.dest.Host + "/group/app"
	ci := fmt.Sprintf(`include:
  - remote: %[1]s/ci/gitlab/buildgw.yml
  - local: templates/buildgw/template.yml
    inputs:
      job_name: component-build
      gateway_url: %[1]s
      tags: "$CI_REGISTRY_IMAGE:component-$CI_COMMIT_SHORT_SHA"
      build_args: "BASE=%[2]s"
      no_cache: true

template-build:
  extends: .buildgw-build
  variables:
    BUILDGW_URL: %[1]s
    BUILDGW_BUILD_ARGS: "BASE=%[2]s"

failing-build:
  extends: .buildgw-build
  variables:
    BUILDGW_URL: %[1]s
    BUILDGW_DOCKERFILE: Dockerfile.fail
    BUILDGW_TAGS: $CI_REGISTRY_IMAGE:failing
    BUILDGW_BUILD_ARGS: "BASE=%[2]s"
`, g.url, g.busybox)
	os.WriteFile(filepath.Join(project, ".gitlab-ci.yml"), []byte(ci), 0o644)
	sha := gitRepo(t, project)

	env := []string{"HOME=" + project, "NODE_EXTRA_CA_CERTS=" + g.caFile,
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com"}
	runJob := func(t *testing.T, job string) (string, int) {
		t.Helper()
		return run(t, project, env, glci, "--shell-executor-no-image", "--ignore-predefined-vars", "CI_REGISTRY_IMAGE",
			"--variable", "BUILDGW_ID_TOKEN="+idToken,
			"--variable", "CI_REGISTRY_IMAGE="+image,
			"--variable", "SSL_CERT_FILE="+g.caFile,
			"--variable", "CURL_CA_BUNDLE="+g.caFile,
			job)
	}

	t.Run("template", func(t *testing.T) {
		out, code := runJob(t, "template-build")
		if code != 0 {
			t.Fatalf("gitlab-ci-local template-build = exit %d, want 0\n%s", code, out)
		}
		if !strings.Contains(out, "buildctl-lite-linux-amd64: OK") {
			t.Errorf("job log lacks the checksum verification of the downloaded client:\n%s", out)
		}
		digest := readTrimmed(t, filepath.Join(project, "buildgw.digest"))
		for _, tag := range []string{sha, "main"} {
			ref := image + ":" + tag
			img := g.pull(t, ref)
			if d, _ := img.Digest(); d.String() != digest {
				t.Errorf("digest of %s = %s, want %s (the job's)", ref, d, digest)
			}
			if got := files(t, img)["r.txt"].content; got != "retried\n" {
				t.Errorf("%s: r.txt = %q, want %q", ref, got, "retried\n")
			}
		}
	})

	t.Run("component", func(t *testing.T) {
		out, code := runJob(t, "component-build")
		if code != 0 {
			t.Fatalf("gitlab-ci-local component-build = exit %d, want 0\n%s", code, out)
		}
		ref := image + ":component-" + sha[:8]
		digest := readTrimmed(t, filepath.Join(project, "buildgw.digest"))
		if d, _ := g.pull(t, ref).Digest(); d.String() != digest {
			t.Errorf("digest of %s = %s, want %s (the job's)", ref, d, digest)
		}
	})

	t.Run("failing build fails the job", func(t *testing.T) {
		out, code := runJob(t, "failing-build")
		if code == 0 {
			t.Fatalf("gitlab-ci-local failing-build = exit 0, want a failed job\n%s", out)
		}
		for _, want := range []string{"marker-7f3a", "FAIL  failing-build"} {
			if !strings.Contains(out, want) {
				t.Errorf("job output lacks %q:\n%s", want, out)
			}
		}
	})
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

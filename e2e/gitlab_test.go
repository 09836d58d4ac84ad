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
	"github.com/buildgw/buildgw/internal/testoidc"
	"gopkg.in/yaml.v3"
)

// TestGitLabCI runs real GitLab CI pipelines with gitlab-ci-local's shell
// executor, with no Docker anywhere: the project includes the template the
// gateway serves (include: remote) or the CI/CD component (with inputs),
// the job fetches buildctl-lite from the gateway, verifies its checksum
// and builds with the job's GitLab ID token. gitlab-ci-local mints no ID
// tokens, so the test mints one from its own issuer and passes it in.
//
// The pipelines run as a real team's would: the gateway enforces
// examples/policy/policy.yaml itself (its hosts swapped for the test's),
// the project path has capitals (Group/My_App), the branch has capitals,
// a "/" and an underscore, there is a merge request pipeline and a tag
// pipeline, and the gateway's certificate comes from a private CA that
// only BUILDGW_CA_FILE (or the component's ca_file input) names.
func TestGitLabCI(t *testing.T) {
	gitlab := testoidc.Start(t, testoidc.Options{})
	g := startGatewayWith(t, gatewayOptions{
		// The job's id_tokens name the gateway's URL as the audience.
		config: func(g *gateway, c *buildgw.Config) {
			c.OIDCIssuers = append(c.OIDCIssuers, buildgw.OIDCIssuer{Name: "gitlab", URL: gitlab.URL, Audiences: []string{g.url}})
		},
		policyFile: func(g *gateway) []byte { return examplePolicy(t, g, gitlab.URL) },
	})
	glci := gitlabCILocal(t)

	// The template the gateway serves is the one in examples/gitlab.
	code, served := g.do(t, http.MethodGet, "/ci/gitlab/buildgw.yml", "", "", nil)
	want, _ := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "examples", "gitlab", "buildgw.yml"))
	if code != http.StatusOK || string(served) != string(want) {
		t.Fatalf("GET /ci/gitlab/buildgw.yml = %d, %d bytes, want 200 and examples/gitlab/buildgw.yml", code, len(served))
	}

	const (
		projectPath = "Group/My_App"
		branch      = "Feature/Login_Page"
		branchSlug  = "feature-login-page" // GitLab's CI_COMMIT_REF_SLUG of branch
		jobImage    = "registry.example.com/tools/ci-shell:3"
	)
	project := t.TempDir()
	// A team's Dockerfile that copies its whole context.
	os.WriteFile(filepath.Join(project, "Dockerfile"), []byte("ARG BASE\nFROM ${BASE}\nRUN echo retried > /r.txt\nCOPY . /ctx/\n"), 0o644)
	copyFile(t, "testdata/fail/Dockerfile", filepath.Join(project, "Dockerfile.fail"))
	copyFile(t, filepath.Join(testenv.ModuleRoot(t), "examples", "gitlab", "templates", "buildgw", "template.yml"),
		filepath.Join(project, "templates", "buildgw", "template.yml"))
	os.WriteFile(filepath.Join(project, ".dockerignore"), []byte(".gitlab-ci-local\n.git\n"), 0o644)
	// GitLab's $CI_REGISTRY_IMAGE: the project path in lowercase.
	image := g.dest.Host + "/group/my_app"
	ci := fmt.Sprintf(`include:
  - remote: %[1]s/ci/gitlab/buildgw.yml
  - local: templates/buildgw/template.yml
    inputs:
      job_name: component-build
      gateway_url: %[1]s
      image: %[3]s
      runner_tags: [buildgw-e2e]
      build_args: "BASE=%[2]s"
      ca_file: %[4]s
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
    BUILDGW_TAGS: $CI_REGISTRY_IMAGE:dev-failing
    BUILDGW_BUILD_ARGS: "BASE=%[2]s"
`, g.url, g.busybox, jobImage, g.caFile)
	os.WriteFile(filepath.Join(project, ".gitlab-ci.yml"), []byte(ci), 0o644)
	sha := gitRepoAt(t, project, "https://gitlab.example.com/"+projectPath+".git", branch)

	// A token as GitLab mints it for a job of this project.
	token := func(ref, refType, source string, protected bool, change func(c map[string]any)) string {
		now := time.Now()
		c := gitlab.GitLabClaims(g.url, testoidc.GitLab{ProjectPath: projectPath, Ref: ref, RefType: refType, Protected: protected}, now)
		c["exp"] = now.Add(30 * time.Minute).Unix()
		c["sha"] = sha
		c["pipeline_source"] = source
		c["ref_path"] = map[string]string{"branch": "refs/heads/", "tag": "refs/tags/"}[refType] + ref
		if change != nil {
			change(c)
		}
		return gitlab.MustMint(t, c)
	}
	branchToken := token(branch, "branch", "push", false, nil)

	// gitlab-ci-local trusts the gateway for include: remote by
	// NODE_EXTRA_CA_CERTS, as a GitLab instance does by its own CA
	// configuration; the job itself has nothing but BUILDGW_CA_FILE.
	env := []string{"HOME=" + project, "NODE_EXTRA_CA_CERTS=" + g.caFile, "SSL_CERT_FILE=", "CURL_CA_BUNDLE=",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com"}
	tmp := t.TempDir() // the jobs' TMPDIR: what they leave behind
	runJob := func(t *testing.T, job, idToken string, vars ...string) (string, int) {
		t.Helper()
		// The component's job names an image; this host is the job image.
		args := []string{"--shell-executor-no-image", "--force-shell-executor",
			"--ignore-predefined-vars", "CI_REGISTRY,CI_PIPELINE_SOURCE,CI_COMMIT_TAG,CI_COMMIT_REF_NAME,CI_COMMIT_REF_SLUG,CI_COMMIT_BRANCH",
			"--variable", "BUILDGW_ID_TOKEN=" + idToken,
			"--variable", "CI_REGISTRY=" + g.dest.Host,
			"--variable", "TMPDIR=" + tmp,
		}
		for _, v := range vars {
			args = append(args, "--variable", v)
		}
		out, code := run(t, project, env, glci, append(args, job)...)
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("gitlab-ci-local %s left %d entries in TMPDIR (the downloaded client?), want none", job, len(left))
			for _, e := range left {
				os.RemoveAll(filepath.Join(tmp, e.Name()))
			}
		}
		return out, code
	}
	// pushed checks that every tag of image holds the job's digest, and
	// that nothing the job wrote went into the build context.
	pushed := func(t *testing.T, tags ...string) {
		t.Helper()
		digest := readTrimmed(t, filepath.Join(project, "buildgw.digest"))
		for _, tag := range tags {
			ref := image + ":" + tag
			img := g.pull(t, ref)
			if d, _ := img.Digest(); d.String() != digest {
				t.Errorf("digest of %s = %s, want %s (the job's)", ref, d, digest)
			}
			fs := files(t, img)
			if got := fs["r.txt"].content; got != "retried\n" {
				t.Errorf("%s: r.txt = %q, want %q", ref, got, "retried\n")
			}
			if _, ok := fs["ctx/Dockerfile"]; !ok {
				t.Errorf("%s: no ctx/Dockerfile: the context was not copied", ref)
			}
			for name := range fs {
				if strings.HasPrefix(name, "ctx/buildgw.") || strings.HasPrefix(name, "ctx/buildctl-lite") {
					t.Errorf("%s holds %s: the job's own file went into the build context", ref, name)
				}
			}
		}
	}

	t.Run("branch with capitals", func(t *testing.T) {
		// The job's reports of an earlier pipeline are in the directory,
		// as artifacts or a reused shell executor directory leave them.
		os.WriteFile(filepath.Join(project, "buildgw.digest"), []byte("sha256:old\n"), 0o644)
		out, code := runJob(t, "template-build", branchToken, "BUILDGW_CA_FILE="+g.caFile)
		if code != 0 {
			t.Fatalf("gitlab-ci-local template-build = exit %d, want 0\n%s", code, out)
		}
		if !strings.Contains(out, "buildctl-lite-linux-amd64: OK") {
			t.Errorf("job log lacks the checksum verification of the downloaded client:\n%s", out)
		}
		pushed(t, sha, branchSlug)
	})

	t.Run("merge request", func(t *testing.T) {
		// A merge request pipeline of the branch: its token carries the
		// source branch as ref, as GitLab's does. The component runs with
		// its default images, and its own ca_file input.
		mr := token(branch, "branch", "merge_request_event", false, nil)
		out, code := runJob(t, "component-build", mr,
			"CI_PIPELINE_SOURCE=merge_request_event", "CI_MERGE_REQUEST_IID=7",
			"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME="+branch, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME=main")
		if code != 0 {
			t.Fatalf("gitlab-ci-local component-build = exit %d, want 0\n%s", code, out)
		}
		pushed(t, sha, branchSlug)
	})

	t.Run("protected tag", func(t *testing.T) {
		// gitlab-ci-local takes the ref from the checked-out branch; a tag
		// pipeline gets GitLab's values for the tag.
		tok := token("v1.2.0", "tag", "push", true, nil)
		out, code := runJob(t, "template-build", tok, "BUILDGW_CA_FILE="+g.caFile,
			"CI_COMMIT_TAG=v1.2.0", "CI_COMMIT_REF_NAME=v1.2.0", "CI_COMMIT_REF_SLUG=v1-2-0", "CI_COMMIT_BRANCH=")
		if code != 0 {
			t.Fatalf("gitlab-ci-local template-build on tag v1.2.0 = exit %d, want 0\n%s", code, out)
		}
		pushed(t, sha, "v1-2-0")
	})

	t.Run("component inputs", func(t *testing.T) {
		out, code := run(t, project, env, glci, "--preview")
		if code != 0 {
			t.Fatalf("gitlab-ci-local --preview = exit %d\n%s", code, out)
		}
		var cfg map[string]yaml.Node
		var job struct {
			Image any      `yaml:"image"`
			Tags  []string `yaml:"tags"`
		}
		// Notes come first, then the expanded YAML after a "---" line.
		_, doc, ok := strings.Cut(out, "\n---\n")
		if err := yaml.Unmarshal([]byte(doc), &cfg); !ok || err != nil {
			t.Fatalf("gitlab-ci-local --preview: no YAML document (%v)\n%s", err, out)
		}
		node := cfg["component-build"]
		if err := node.Decode(&job); err != nil {
			t.Fatalf("gitlab-ci-local --preview: component-build: %v\n%s", err, out)
		}
		// image: NAME or image: {name: NAME}
		if img := fmt.Sprint(job.Image); img != jobImage && img != "map[name:"+jobImage+"]" {
			t.Errorf("component-build image = %v, want the image input %s", job.Image, jobImage)
		}
		if len(job.Tags) != 1 || job.Tags[0] != "buildgw-e2e" {
			t.Errorf("component-build tags = %v, want the runner_tags input [buildgw-e2e]", job.Tags)
		}
	})

	t.Run("curl-less image", func(t *testing.T) {
		out, code := runJob(t, "template-build", branchToken, "BUILDGW_CA_FILE="+g.caFile,
			"PATH="+toolDir(t, "curl", nil))
		if code != 0 {
			t.Fatalf("gitlab-ci-local template-build without curl = exit %d, want 0 (wget)\n%s", code, out)
		}
		pushed(t, sha, branchSlug)
	})

	t.Run("download error is shown", func(t *testing.T) {
		// A Mac runner: the gateway serves only its own platform and says so.
		uname := map[string]string{"uname": "#!/bin/sh\ncase \"$1\" in -s) echo Darwin ;; -m) echo arm64 ;; *) echo Darwin ;; esac\n"}
		for _, without := range []string{"", "curl"} {
			out, code := runJob(t, "template-build", branchToken, "BUILDGW_CA_FILE="+g.caFile, "PATH="+toolDir(t, without, uname))
			if want := "this gateway has no buildctl-lite for darwin/arm64"; code == 0 || !strings.Contains(out, want) {
				t.Errorf("template-build on darwin/arm64 (without %q) = exit %d, want a failure whose log says %q\n%s", without, code, want, out)
			}
		}
	})

	t.Run("refused token says why", func(t *testing.T) {
		for _, tt := range []struct {
			name, token string
			want        []string
		}{
			{"expired", token(branch, "branch", "push", false, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = time.Now().Add(-20*time.Minute).Unix(), time.Now().Add(-20*time.Minute).Unix(), time.Now().Add(-10*time.Minute).Unix()
			}), []string{"unauthorized: token expired at "}},
			{"wrong audience", token(branch, "branch", "push", false, func(c map[string]any) { c["aud"] = "https://gitlab.example.com" }),
				[]string{`wrong token audience "https://gitlab.example.com"`, fmt.Sprintf("must have aud %q", g.url)}},
		} {
			out, code := runJob(t, "template-build", tt.token, "BUILDGW_CA_FILE="+g.caFile)
			if code == 0 {
				t.Errorf("template-build with an %s token = exit 0, want a failure", tt.name)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("template-build with an %s token: log lacks %q\n%s", tt.name, w, out)
				}
			}
			if strings.Contains(out, "buildctl-lite login") {
				t.Errorf("template-build with an %s token suggests buildctl-lite login, which a CI job cannot use\n%s", tt.name, out)
			}
		}
	})

	t.Run("failing build fails the job", func(t *testing.T) {
		out, code := runJob(t, "failing-build", branchToken, "BUILDGW_CA_FILE="+g.caFile)
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

// examplePolicy is examples/policy/policy.yaml with its example hosts
// replaced by the test's: GitLab's issuer, the destination registry (as
// GitLab's container registry) and the base registry (as the mirror).
func examplePolicy(t *testing.T, g *gateway, gitlabURL string) []byte {
	b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "examples", "policy", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.NewReplacer("https://gitlab.example.com", gitlabURL,
		"registry.example.com", g.dest.Host, "mirror.example.com", g.base.Host).Replace(string(b)))
}

// toolDir returns a PATH directory with the commands of this host's
// /usr/bin and /bin but without, and with scripts as extra commands: the
// tools of a job image.
func toolDir(t *testing.T, without string, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, src := range []string{"/usr/bin", "/bin"} {
		ents, _ := os.ReadDir(src)
		for _, e := range ents {
			if e.Name() == without {
				continue
			}
			os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name()))
		}
	}
	for name, body := range scripts {
		os.Remove(filepath.Join(dir, name))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// node, which gitlab-ci-local's own helpers may need, lives elsewhere
	// on some hosts.
	return dir
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

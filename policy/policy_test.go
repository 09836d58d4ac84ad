package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/netmode"
)

const testPolicy = `
rules:
  - name: gitlab-protected
    match: {kind: oidc, issuer: https://gitlab.example.com, ref_protected: "true"}
    allow:
      destinations:
        - registry.example.com/{project_path}
        - registry.example.com/{project_path}/*
      tags: ["*"]
      from: [registry.example.com, docker.io]
      runners: [kaniko, dind]
      limits: {max_context_bytes: 1073741824, timeout: 30m, max_concurrent: 4}
  - name: gitlab-branches
    match: {kind: oidc, issuer: https://gitlab.example.com, ref_protected: "false"}
    allow:
      destinations: ["registry.example.com/{project_path}"]
      tags: ["dev-*", "{ref}"]
      deny_tags: ["latest", "v[0-9]*"]
      from: [registry.example.com]
  - name: teams
    match: {kind: token, team: "*"}
    allow:
      destinations: ["registry.example.com/teams/{team}/**"]
      from: ["*"]
  - name: blocked
    match: {kind: token, name: "blocked-*"}
    allow: {}
`

func mustParse(t *testing.T, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	return p
}

func gitlab(projectPath string, protected bool, ref string) auth.Identity {
	prot := "false"
	if protected {
		prot = "true"
	}
	attrs := map[string]string{
		"ref_protected": prot,
		"ref":           ref,
		"ref_type":      "branch",
	}
	if projectPath != "\x00missing" {
		attrs["project_path"] = projectPath
	}
	return auth.Identity{
		Name:       "gitlab:" + projectPath + ":" + ref,
		Kind:       auth.KindOIDC,
		Issuer:     "https://gitlab.example.com",
		Attributes: attrs,
	}
}

func team(team string) auth.Identity {
	return auth.Identity{Name: "jenkins-" + team, Kind: auth.KindToken, Attributes: map[string]string{"team": team}}
}

func tags(t *testing.T, refs ...string) []name.Tag {
	t.Helper()
	var out []name.Tag
	for _, r := range refs {
		tag, err := name.NewTag(r, name.StrictValidation)
		if err != nil {
			t.Fatalf("name.NewTag(%q) = %v", r, err)
		}
		out = append(out, tag)
	}
	return out
}

type decideCase struct {
	name       string
	id         auth.Identity
	dests      []string
	runner     string // "" means kaniko
	dockerfile string // "" means nil
	buildArgs  map[string]string
	allowed    bool
	rule       string
	reason     []string // substrings of Reason
}

// analyze is the Analysis of a Dockerfile that must be valid.
func analyze(t *testing.T, src string) *dockerfile.Analysis {
	t.Helper()
	a, err := dockerfile.Analyze([]byte(src), nil, "")
	if err != nil {
		t.Fatalf("Analyze(%q) = %v", src, err)
	}
	return a
}

func runDecide(t *testing.T, p *Policy, tests []decideCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Request{
				Identity:     tt.id,
				Destinations: tags(t, tt.dests...),
				Runner:       tt.runner,
			}
			if r.Runner == "" {
				r.Runner = "kaniko"
			}
			if tt.dockerfile != "" {
				a, err := dockerfile.Analyze([]byte(tt.dockerfile), tt.buildArgs, "")
				if err != nil {
					// The gateway refuses such a Dockerfile before any
					// Decide, with this error.
					if tt.allowed {
						t.Fatalf("Analyze(%q) = %v, want it allowed", tt.dockerfile, err)
					}
					for _, s := range tt.reason {
						if !strings.Contains(err.Error(), s) {
							t.Errorf("Analyze(%q) = %v, want it to contain %q", tt.dockerfile, err, s)
						}
					}
					return
				}
				r.Dockerfile = a
			}
			got := p.Decide(r)
			if got.Allowed != tt.allowed || got.Rule != tt.rule {
				t.Fatalf("Decide(%s) = %+v, want allowed=%v rule=%q", tt.name, got, tt.allowed, tt.rule)
			}
			for _, s := range tt.reason {
				if !strings.Contains(got.Reason, s) {
					t.Errorf("Decide(%s).Reason = %q, want it to contain %q", tt.name, got.Reason, s)
				}
			}
		})
	}
}

func TestDecideDestinations(t *testing.T) {
	p := mustParse(t, testPolicy)
	const prot, branches = "gitlab-protected", "gitlab-branches"
	runDecide(t, p, []decideCase{
		{name: "own repo", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app:v1.2.3"}, allowed: true, rule: prot,
			reason: []string{`allowed by policy rule "gitlab-protected"`}},
		{name: "own sub-repo", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app/cache:1"}, allowed: true, rule: prot},
		{name: "two levels below", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app/a/b:1"}, rule: prot,
			reason: []string{"registry.example.com/group/app/a/b:1"}},
		{name: "other project", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/other:v1"}, rule: prot,
			reason: []string{`policy rule "gitlab-protected" does not allow pushing to registry.example.com/group/other:v1`}},
		{name: "other project from branch", id: gitlab("group/app", false, "dev-1"),
			dests: []string{"registry.example.com/other/proj:dev-1"}, rule: branches,
			reason: []string{`policy rule "gitlab-branches" does not allow pushing to registry.example.com/other/proj:dev-1`}},
		{name: "prefix of own path", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app2:1"}, rule: prot},
		{name: "other registry", id: gitlab("group/app", true, "main"),
			dests: []string{"evil.example.com/group/app:1"}, rule: prot, reason: []string{"evil.example.com/group/app:1"}},
		{name: "one of two destinations refused", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app:1", "registry.example.com/group/b:1"}, rule: prot,
			reason: []string{"registry.example.com/group/b:1"}},
		{name: "path traversal in destination", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app/../../other/x:1"}, rule: prot,
			reason: []string{"not a valid repository name"}},

		// Tags.
		{name: "latest from protected", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app:latest"}, allowed: true, rule: prot},
		{name: "latest from branch", id: gitlab("group/app", false, "latest"),
			dests: []string{"registry.example.com/group/app:latest"}, rule: branches,
			reason: []string{"registry.example.com/group/app:latest", `deny_tags "latest"`}},
		{name: "semver from protected", id: gitlab("group/app", true, "main"),
			dests: []string{"registry.example.com/group/app:v2.0.1"}, allowed: true, rule: prot},
		{name: "semver from branch named like one", id: gitlab("group/app", false, "v2.0.1"),
			dests: []string{"registry.example.com/group/app:v2.0.1"}, rule: branches, reason: []string{`deny_tags "v[0-9]*"`}},
		{name: "dev tag from branch", id: gitlab("group/app", false, "feature"),
			dests: []string{"registry.example.com/group/app:dev-42"}, allowed: true, rule: branches},
		{name: "branch-name tag", id: gitlab("group/app", false, "feature-x"),
			dests: []string{"registry.example.com/group/app:feature-x"}, allowed: true, rule: branches},
		{name: "other branch's tag", id: gitlab("group/app", false, "feature-x"),
			dests: []string{"registry.example.com/group/app:feature-y"}, rule: branches, reason: []string{"tag not in allow.tags"}},
		{name: "branch with slash makes {ref} unusable", id: gitlab("group/app", false, "feature/x"),
			dests: []string{"registry.example.com/group/app:feature-x"}, rule: branches,
			reason: []string{"tag {ref} is unusable"}},
		{name: "glob in ref is literal", id: gitlab("group/app", false, "dev-*"),
			dests: []string{"registry.example.com/group/app:dev-x"}, allowed: true, rule: branches}, // allowed by dev-*, not by {ref}
		{name: "star ref does not match anything", id: gitlab("group/app", false, "*"),
			dests: []string{"registry.example.com/group/app:anything"}, rule: branches},

		// Runners.
		{name: "dind allowed for protected", id: gitlab("group/app", true, "main"), runner: "dind",
			dests: []string{"registry.example.com/group/app:1"}, allowed: true, rule: prot},
		{name: "dind refused for branches", id: gitlab("group/app", false, "main"), runner: "dind",
			dests: []string{"registry.example.com/group/app:dev-1"}, rule: branches,
			reason: []string{`policy rule "gitlab-branches" does not allow runner "dind"`}},

		// Rule selection.
		{name: "no rule matches", id: auth.Identity{Name: "cert-x", Kind: auth.KindMTLS},
			dests:  []string{"registry.example.com/group/app:1"},
			reason: []string{`no policy rule matches identity "cert-x"`}},
		{name: "missing attribute does not match glob", id: auth.Identity{Name: "tok", Kind: auth.KindToken},
			dests: []string{"registry.example.com/teams/a/b:1"}, reason: []string{"no policy rule matches"}},
		{name: "other issuer", id: func() auth.Identity {
			id := gitlab("group/app", true, "main")
			id.Issuer = "https://evil.example.com"
			return id
		}(),
			dests: []string{"registry.example.com/group/app:1"}, reason: []string{"no policy rule matches"}},
		{name: "deny rule", id: auth.Identity{Name: "blocked-1", Kind: auth.KindToken},
			dests: []string{"registry.example.com/x/y:1"}, rule: "blocked"},
		{name: "team", id: team("infra"),
			dests: []string{"registry.example.com/teams/infra/a/b:1"}, allowed: true, rule: "teams"},
		{name: "team itself via **", id: team("infra"),
			dests: []string{"registry.example.com/teams/infra:1"}, allowed: true, rule: "teams"},
		{name: "other team", id: team("infra"),
			dests: []string{"registry.example.com/teams/web/a:1"}, rule: "teams"},
	})
}

// TestDecideInjection tries attribute values that would widen a pattern if
// they were read as pattern syntax or path syntax.
func TestDecideInjection(t *testing.T) {
	p := mustParse(t, testPolicy)
	const prot = "gitlab-protected"
	var tests []decideCase
	for _, v := range []string{"../../other", "group/app/../../other", "*", "**", "other/*", "group/*", "other/**", "", "\x00missing", "Other/Proj", "other/proj/", "/other/proj", "other//proj", "./other/proj", "other/proj?", "[o]ther/proj", "{project_path}", "other proj"} {
		for _, dest := range []string{
			"registry.example.com/other/proj:1",
			"registry.example.com/other/proj/x:1",
			"registry.example.com/group/app:1",
			"registry.example.com/group/other:1",
			"registry.example.com/xy:1",
		} {
			tests = append(tests, decideCase{
				name: "project_path=" + strings.ReplaceAll(v, "/", "|") + " to " + dest, id: gitlab(v, true, "main"),
				dests: []string{dest}, rule: prot, reason: []string{"does not allow pushing to"},
			})
		}
	}
	for _, v := range []string{"*", "**", "..", "../web", "infra/../web", ""} {
		rule := "teams"
		if strings.Contains(v, "/") {
			rule = "" // match globs do not cross "/"
		}
		tests = append(tests, decideCase{
			name: "team=" + v, id: team(v), dests: []string{"registry.example.com/teams/web/app:1"}, rule: rule,
		})
	}
	runDecide(t, p, tests)

	// The reason says why a pattern was unusable.
	got := p.Decide(Request{Identity: gitlab("\x00missing", true, "main"), Runner: "kaniko",
		Destinations: tags(t, "registry.example.com/group/app:1")})
	if want := `the identity has no attribute "project_path"`; got.Allowed || !strings.Contains(got.Reason, want) {
		t.Errorf("Decide(missing attribute) = %+v, want a denial containing %q", got, want)
	}
}

func TestDecideDockerfile(t *testing.T) {
	p := mustParse(t, testPolicy)
	const prot, branches = "gitlab-protected", "gitlab-branches"
	own := []string{"registry.example.com/group/app:1"}
	dev := []string{"registry.example.com/group/app:dev-1"}
	protID, branchID := gitlab("group/app", true, "main"), gitlab("group/app", false, "main")
	runDecide(t, p, []decideCase{
		{name: "allowed registry", id: protID, dests: own, allowed: true, rule: prot,
			dockerfile: "FROM registry.example.com/base/debian:12\nRUN true\n"},
		{name: "disallowed registry", id: protID, dests: own, rule: prot,
			dockerfile: "FROM evil.example.com/xy\n",
			reason:     []string{`policy rule "gitlab-protected" does not allow image evil.example.com/xy:latest (FROM on line 1)`, "repository evil.example.com/xy is not in allow.from"}},
		{name: "hidden behind ARG default", id: protID, dests: own, rule: prot,
			dockerfile: "ARG BASE=evil.example.com/xy\nFROM $BASE\n", reason: []string{"evil.example.com/xy", "FROM on line 2"}},
		{name: "hidden behind nested ARG", id: protID, dests: own, rule: prot,
			dockerfile: "ARG REG=evil.example.com\nARG BASE=${REG}/xy\nFROM ${BASE}:1\n", reason: []string{"evil.example.com/xy:1"}},
		{name: "set by build arg", id: protID, dests: own, rule: prot,
			dockerfile: "ARG BASE=registry.example.com/base\nFROM $BASE\n",
			buildArgs:  map[string]string{"BASE": "evil.example.com/xy"}, reason: []string{"evil.example.com/xy"}},
		{name: "allowed build arg", id: protID, dests: own, allowed: true, rule: prot,
			dockerfile: "ARG BASE=evil.example.com/xy\nFROM $BASE\n",
			buildArgs:  map[string]string{"BASE": "registry.example.com/base"}},
		{name: "build arg for undeclared ARG", id: protID, dests: own, rule: prot,
			dockerfile: "ARG BASE=${REG:-registry.example.com}/base\nFROM $BASE\n",
			buildArgs:  map[string]string{"REG": "evil.example.com"}, reason: []string{"build arg REG is not declared"}},
		{name: "declared ARG with default fallback", id: protID, dests: own, allowed: true, rule: prot,
			dockerfile: "ARG REG\nARG BASE=${REG:-registry.example.com}/base\nFROM $BASE\n"},
		{name: "empty build arg", id: protID, dests: own, rule: prot,
			dockerfile: "ARG BASE=registry.example.com/base\nFROM ${BASE:-evil.example.com/xy}\n",
			buildArgs:  map[string]string{"BASE": ""}, reason: []string{"ARG BASE is set to an empty build arg"}},
		{name: "unset ARG", id: protID, dests: own, rule: prot,
			dockerfile: "ARG BASE\nFROM $BASE\n", reason: []string{"ARG BASE has no value"}},
		{name: "undeclared variable", id: protID, dests: own, rule: prot,
			dockerfile: "FROM registry.example.com/${IMAGE}\n", reason: []string{"ARG IMAGE has no value"}},
		{name: "undeclared variable with default", id: protID, dests: own, rule: prot,
			dockerfile: "FROM ${REG:-registry.example.com}/x\n", reason: []string{"ARG REG has no value"}},
		{name: "platform ARG", id: protID, dests: own, rule: prot,
			dockerfile: "FROM registry.example.com/base-${TARGETARCH}\n", reason: []string{"TARGETARCH is predefined by BuildKit"}},
		{name: "platform ARG from build arg", id: protID, dests: own, allowed: true, rule: prot,
			dockerfile: "FROM registry.example.com/base-${TARGETARCH}\n", buildArgs: map[string]string{"TARGETARCH": "amd64"}},
		{name: "platform flag", id: protID, dests: own, allowed: true, rule: prot,
			dockerfile: "FROM --platform=$BUILDPLATFORM registry.example.com/golang:1 AS build\n"},
		{name: "platform flag bad image", id: protID, dests: own, rule: prot,
			dockerfile: "FROM --platform=linux/amd64 evil.example.com/xy\n", reason: []string{"evil.example.com/xy"}},
		{name: "scratch", id: branchID, dests: dev, allowed: true, rule: branches,
			dockerfile: "FROM scratch\nCOPY . /\n"},
		{name: "stage names", id: branchID, dests: dev, allowed: true, rule: branches,
			dockerfile: "FROM registry.example.com/go:1 AS Build\nRUN true\nFROM build AS test\nFROM BUILD\nCOPY --from=test /x /x\nCOPY --from=0 /y /y\nRUN --mount=from=build,target=/b true\n"},
		{name: "multi-stage one bad", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM registry.example.com/go:1 AS build\nFROM evil.example.com/runtime:1\nCOPY --from=build /x /x\n",
			reason:     []string{"evil.example.com/runtime:1 (FROM on line 2)"}},
		{name: "later stage name is an image", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM app\nFROM registry.example.com/go:1 AS app\n", reason: []string{"index.docker.io/library/app:latest"}},
		{name: "docker hub short name not allowed", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM busybox\n", reason: []string{"index.docker.io/library/busybox:latest", "repository index.docker.io/library/busybox is not in allow.from"}},
		{name: "docker hub short name via docker.io alias", id: protID, dests: own, allowed: true, rule: prot,
			dockerfile: "FROM busybox:1.36\n"},
		{name: "COPY --from image", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM scratch\nCOPY --from=evil.example.com/tools:1 /bin/x /x\n", reason: []string{"COPY --from on line 2"}},
		{name: "COPY --from later stage index", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM scratch\nCOPY --from=10 /x /x\nFROM scratch\n", reason: []string{"index.docker.io/library/10:latest"}},
		{name: "RUN --mount from image", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM registry.example.com/base\nRUN --mount=type=bind,from=evil.example.com/tools,target=/t true\n",
			reason:     []string{"RUN --mount from= on line 2"}},
		{name: "syntax directive", id: branchID, dests: dev, rule: branches,
			dockerfile: "# syntax=docker/dockerfile:1\nFROM scratch\n", reason: []string{"index.docker.io/docker/dockerfile:1", "# syntax directive"}},
		{name: "BUILDKIT_SYNTAX build arg", id: branchID, dests: dev, rule: branches,
			dockerfile: "FROM scratch\n", buildArgs: map[string]string{"BUILDKIT_SYNTAX": "evil.example.com/frontend"},
			reason: []string{"evil.example.com/frontend"}},
		{name: "unparsable", id: protID, dests: own, rule: prot,
			dockerfile: "FROM a b\n", reason: []string{"cannot parse Dockerfile"}},
		{name: "no FROM", id: protID, dests: own, rule: prot,
			dockerfile: "RUN true\n", reason: []string{"cannot parse Dockerfile"}},
		{name: "invalid reference", id: protID, dests: own, rule: prot,
			dockerfile: "FROM registry.example.com/Upper\n", reason: []string{"not a valid image reference"}},
		{name: "destination checked first", id: protID, dests: []string{"registry.example.com/x/y:1"}, rule: prot,
			dockerfile: "FROM evil.example.com/xy\n", reason: []string{"registry.example.com/x/y:1"}},
	})

	// Empty is a Dockerfile, and an invalid one.
	if _, err := dockerfile.Analyze([]byte{}, nil, ""); err == nil || !strings.Contains(err.Error(), "cannot parse Dockerfile") {
		t.Errorf("Analyze(empty Dockerfile) = %v, want cannot parse Dockerfile", err)
	}
}

// TestDecideTwice is the gateway's sequence: destinations first, without
// the Dockerfile, then the same request with it.
func TestDecideTwice(t *testing.T) {
	p := mustParse(t, testPolicy)
	r := Request{Identity: gitlab("group/app", true, "main"), Runner: "kaniko",
		Destinations: tags(t, "registry.example.com/group/app:1")}
	if got := p.Decide(r); !got.Allowed {
		t.Fatalf("Decide(no Dockerfile) = %+v, want allowed", got)
	}
	r.Dockerfile = analyze(t, "FROM evil.example.com/xy\n")
	if got := p.Decide(r); got.Allowed || got.Rule != "gitlab-protected" {
		t.Fatalf("Decide(bad Dockerfile) = %+v, want denied by gitlab-protected", got)
	}
}

func TestDecideLimits(t *testing.T) {
	p := mustParse(t, testPolicy)
	r := Request{Identity: gitlab("group/app", true, "main"), Runner: "kaniko",
		Destinations: tags(t, "registry.example.com/group/app:1")}
	got := p.Decide(r)
	want := Limits{MaxContextBytes: 1 << 30, Timeout: 30 * time.Minute, MaxConcurrent: 4}
	if !got.Allowed || got.Limits != want {
		t.Errorf("Decide(%s).Limits = %+v, want %+v", "protected", got.Limits, want)
	}
	r.Identity = gitlab("group/app", false, "main")
	r.Destinations = tags(t, "registry.example.com/group/app:dev-1")
	if got := p.Decide(r); !got.Allowed || got.Limits != (Limits{}) {
		t.Errorf("Decide(%s) = %+v, want allowed with zero limits", "branch", got)
	}
}

// TestFirstRuleDecides: a broad rule below a narrow one is not consulted.
func TestFirstRuleDecides(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: narrow
    match: {kind: token, name: ci}
    allow: {destinations: [registry.example.com/ci/app]}
  - name: broad
    match: {kind: token}
    allow: {destinations: ["registry.example.com/**"]}
`)
	id := auth.Identity{Name: "ci", Kind: auth.KindToken}
	got := p.Decide(Request{Identity: id, Runner: "kaniko", Destinations: tags(t, "registry.example.com/other/app:1")})
	if got.Allowed || got.Rule != "narrow" {
		t.Errorf("Decide(first rule) = %+v, want denied by narrow", got)
	}
	id.Name = "other"
	if got := p.Decide(Request{Identity: id, Runner: "kaniko", Destinations: tags(t, "registry.example.com/other/app:1")}); !got.Allowed || got.Rule != "broad" {
		t.Errorf("Decide(second rule) = %+v, want allowed by broad", got)
	}
}

func TestDecideDefaults(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: minimal
    match: {kind: token}
    allow: {destinations: [registry.example.com/app]}
`)
	r := Request{Identity: auth.Identity{Name: "t", Kind: auth.KindToken}, Runner: "kaniko",
		Destinations: tags(t, "registry.example.com/app:anything")}
	if got := p.Decide(r); !got.Allowed {
		t.Errorf("Decide(default tags and runner) = %+v, want allowed", got)
	}
	r.Runner = "dind"
	if got := p.Decide(r); got.Allowed {
		t.Errorf("Decide(dind by default) = %+v, want denied", got)
	}
	r.Runner = "kaniko"
	r.Dockerfile = analyze(t, "FROM scratch\nFROM scratch AS b\nFROM b\n")
	if got := p.Decide(r); !got.Allowed {
		t.Errorf("Decide(scratch with default from) = %+v, want allowed", got)
	}
	r.Dockerfile = analyze(t, "FROM registry.example.com/base\n")
	if got := p.Decide(r); got.Allowed {
		t.Errorf("Decide(any image with default from) = %+v, want denied", got)
	}
	r.Dockerfile = nil
	r.Destinations = nil
	if got := p.Decide(r); got.Allowed {
		t.Errorf("Decide(no destinations) = %+v, want denied", got)
	}
	var nilPolicy *Policy
	if got := nilPolicy.Decide(r); got.Allowed {
		t.Errorf("(*Policy)(nil).Decide = %+v, want denied", got)
	}
}

func TestExamplePolicy(t *testing.T) {
	p, err := Load("../examples/policy/policy.yaml")
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	runDecide(t, p, []decideCase{
		{name: "protected", id: gitlab("group/app", true, "main"), dests: []string{"registry.example.com/group/app:latest"},
			dockerfile: "FROM mirror.example.com/debian:12\n", allowed: true, rule: "gitlab-protected"},
		{name: "branch latest", id: gitlab("group/app", false, "main"), dests: []string{"registry.example.com/group/app:latest"},
			rule: "gitlab-branches"},
		{name: "admin", id: auth.Identity{Name: "platform-admin", Kind: auth.KindToken}, runner: "dind",
			dests: []string{"registry.example.com/any/thing:1"}, dockerfile: "FROM busybox\n", allowed: true, rule: "platform-admins"},
		{name: "team", id: team("web"), dests: []string{"registry.example.com/teams/web/site:1"}, allowed: true, rule: "jenkins-teams"},
	})

	// The GitLab template's and component's default tags,
	// $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA and :$CI_COMMIT_REF_SLUG, with the
	// values GitLab gives them for project Group/My_App.
	const sha = "0123456789abcdef0123456789abcdef01234567"
	image := "registry.example.com/group/my_app"
	glab := func(ref, refType string, protected bool) auth.Identity {
		id := gitlab("Group/My_App", protected, ref)
		id.Attributes["ref_type"] = refType
		id.Attributes["sha"] = sha
		return id
	}
	jenkins := func(job string) auth.Identity {
		return auth.Identity{Name: "jenkins:" + job, Kind: auth.KindOIDC, Issuer: "https://jenkins.example.com/oidc",
			Attributes: map[string]string{"sub": "https://jenkins.example.com/job/" + job + "/", "build_number": "3"}}
	}
	runDecide(t, p, []decideCase{
		// A merge request pipeline's token carries the source branch.
		{name: "template defaults on a branch", id: glab("Feature/Login_Page", "branch", false),
			dests: []string{image + ":" + sha, image + ":feature-login-page"}, allowed: true, rule: "gitlab-branches"},
		{name: "template defaults on main", id: glab("main", "branch", true),
			dests: []string{image + ":" + sha, image + ":main"}, allowed: true, rule: "gitlab-protected"},
		{name: "template defaults on a protected tag", id: glab("V1.2.0", "tag", true),
			dests: []string{image + ":" + sha, image + ":v1-2-0"}, allowed: true, rule: "gitlab-protected"},
		{name: "a branch cannot take a version tag", id: glab("v1.2.0", "tag", false),
			dests: []string{image + ":v1-2-0"}, rule: "gitlab-branches", reason: []string{"deny_tags"}},
		{name: "a branch cannot take another branch's slug", id: glab("Feature/Login_Page", "branch", false),
			dests: []string{image + ":main"}, rule: "gitlab-branches", reason: []string{"tag not in allow.tags"}},
		{name: "jenkins main", id: jenkins("app/job/main"), dests: []string{"registry.example.com/team/app:latest"}, allowed: true, rule: "jenkins-app-main"},
		{name: "jenkins branch", id: jenkins("app/job/feature-x"), dests: []string{"registry.example.com/team/app:dev-3"}, allowed: true, rule: "jenkins-app-branches"},
		{name: "jenkins branch latest", id: jenkins("app/job/feature-x"), dests: []string{"registry.example.com/team/app:latest"},
			rule: "jenkins-app-branches", reason: []string{"tag not in allow.tags"}},
		{name: "jenkins pull request", id: jenkins("app/job/PR-7"), dests: []string{"registry.example.com/team/app:dev-3"}, rule: "jenkins-pull-requests"},
		{name: "jenkins gitlab merge request", id: jenkins("app/job/MR-7"), dests: []string{"registry.example.com/team/app:dev-3"}, rule: "jenkins-pull-requests"},
	})
}

func TestDecideNetwork(t *testing.T) {
	p := mustParse(t, `rules:
  - name: open
    match: {team: web}
    allow: {destinations: ["r.example/web/**"], network: egress}
  - name: sealed
    match: {team: db}
    allow: {destinations: ["r.example/db/**"], network: none}
  - name: default
    match: {kind: token}
    allow: {destinations: ["r.example/**"]}
`)
	for _, tc := range []struct {
		team, repo string
		want       netmode.Mode
	}{
		{"web", "r.example/web/app:1", netmode.Egress},
		{"db", "r.example/db/app:1", netmode.None},
		{"other", "r.example/x/app:1", ""},
	} {
		tag, err := name.NewTag(tc.repo)
		if err != nil {
			t.Fatal(err)
		}
		d := p.Decide(Request{
			Identity:     auth.Identity{Name: tc.team, Kind: "token", Attributes: map[string]string{"team": tc.team}},
			Destinations: []name.Tag{tag},
			Runner:       "kaniko",
		})
		if !d.Allowed || d.Network != tc.want {
			t.Errorf("Decide(team %s).Network = %q (allowed %v: %s), want %q", tc.team, d.Network, d.Allowed, d.Reason, tc.want)
		}
	}
	if _, err := Parse([]byte("rules:\n  - name: x\n    match: {kind: token}\n    allow: {destinations: [\"r.example/**\"], network: host}\n")); err == nil || !strings.Contains(err.Error(), "allow.network") {
		t.Errorf("Parse(network: host) = %v, want an error about allow.network", err)
	}
}

package policy

import (
	"strings"
	"testing"
)

// tenantPolicy gives each GitLab project its own repositories to read
// from, plus Docker Hub's official images.
const tenantPolicy = `
rules:
  - name: tenants
    match: {kind: oidc, issuer: https://gitlab.example.com}
    allow:
      destinations: ["registry.example.com/{project_path}"]
      from: ["registry.example.com/{project_path}", "registry.example.com/{project_path}/**", "docker.io/library/*", "registry.example.com/base/*"]
  - name: legacy
    match: {kind: token, team: "*"}
    allow:
      destinations: ["registry.example.com/teams/{team}/**"]
      from: [registry.example.com, "*"]
`

func TestDecideFromRepositories(t *testing.T) {
	p := mustParse(t, tenantPolicy)
	a, b := gitlab("teama/app", true, "main"), gitlab("teamb/app", true, "main")
	destA, destB := []string{"registry.example.com/teama/app:1"}, []string{"registry.example.com/teamb/app:1"}
	runDecide(t, p, []decideCase{
		{name: "tenant b's private image to tenant a", id: a, dests: destA, rule: "tenants",
			dockerfile: "FROM registry.example.com/teamb/app/private:1\n",
			reason:     []string{`policy rule "tenants" does not allow image registry.example.com/teamb/app/private:1 (FROM on line 1): repository registry.example.com/teamb/app/private is not in allow.from`}},
		{name: "tenant b's private image to tenant a by copy --from", id: a, dests: destA, rule: "tenants",
			dockerfile: "FROM registry.example.com/base/alpine:3\nCOPY --from=registry.example.com/teamb/app:1 /secret /\n",
			reason:     []string{`does not allow image registry.example.com/teamb/app:1 (COPY --from on line 2)`}},
		{name: "tenant b's private image to tenant b", id: b, dests: destB, allowed: true, rule: "tenants",
			dockerfile: "FROM registry.example.com/teamb/app/private:1\nCOPY --from=registry.example.com/teamb/app:1 /secret /\n"},
		{name: "shared base and docker hub official image", id: a, dests: destA, allowed: true, rule: "tenants",
			dockerfile: "FROM busybox AS b\nFROM registry.example.com/base/alpine:3\nCOPY --from=b /bin/sh /\n"},
		{name: "docker hub user image", id: a, dests: destA, rule: "tenants",
			dockerfile: "FROM someone/busybox\n", reason: []string{"repository index.docker.io/someone/busybox is not in allow.from"}},
		{name: "a project path prefix is not the project", id: gitlab("teamb", true, "main"), dests: []string{"registry.example.com/teamb:1"}, rule: "tenants",
			dockerfile: "FROM registry.example.com/teambx/app:1\n", reason: []string{"repository registry.example.com/teambx/app is not in allow.from"}},
		{name: "missing attribute makes the entry unusable, not broader", id: gitlab("\x00missing", true, "main"), dests: destA, rule: "tenants",
			dockerfile: "FROM registry.example.com/teamb/app:1\n", reason: []string{`is unusable: the identity has no attribute "project_path"`}},
		{name: "bare registry still allows any repository", id: team("x"), dests: []string{"registry.example.com/teams/x/app:1"}, allowed: true, rule: "legacy",
			dockerfile: "FROM registry.example.com/teamb/app/private:1\nFROM evil.example.com/xy\n"},
	})
}

func TestWarnings(t *testing.T) {
	p := mustParse(t, tenantPolicy)
	w := p.Warnings()
	if len(w) != 2 || !strings.Contains(w[0], `rule "legacy": allow.from "registry.example.com" lets its builds read any repository of registry.example.com, including other tenants' private images`) ||
		!strings.Contains(w[1], `allow.from "*" lets its builds read any repository of any registry`) {
		t.Errorf("Warnings() = %q, want one for registry.example.com and one for *", w)
	}
	if w := mustParse(t, strings.Replace(tenantPolicy, `from: [registry.example.com, "*"]`, `from: ["registry.example.com/teams/{team}/**"]`, 1)).Warnings(); len(w) != 0 {
		t.Errorf("Warnings() of repository patterns only = %q, want none", w)
	}
}

func TestCheckOnbuild(t *testing.T) {
	p := mustParse(t, tenantPolicy)
	a := gitlab("teama/app", true, "main")
	const base = "registry.example.com/base/onbuild:1"
	tests := []struct {
		name       string
		dockerfile string
		triggers   []string
		allowed    bool
		reason     string
	}{
		{"no triggers", "FROM " + base + "\n", nil, true, ""},
		{"copy --from another tenant", "FROM " + base + "\n", []string{"RUN true", "COPY --from=registry.example.com/teamb/app:1 /secret /"}, false,
			`policy rule "tenants" does not allow image registry.example.com/teamb/app:1 (ONBUILD trigger 2 of base image ` + base + `): repository registry.example.com/teamb/app is not in allow.from`},
		{"run --mount from another tenant", "FROM " + base + "\n", []string{"RUN --mount=type=bind,from=registry.example.com/teamb/app:1,target=/m cat /m/secret"}, false,
			"does not allow image registry.example.com/teamb/app:1"},
		{"copy --from own image", "FROM " + base + "\n", []string{"COPY --from=registry.example.com/teama/app:1 /a /"}, true, ""},
		{"copy --from a stage of the dockerfile", "FROM busybox AS tools\nFROM " + base + "\n", []string{"COPY --from=tools /bin/sh /", "COPY --from=0 /bin/sh /"}, true, ""},
		{"a line break smuggling a FROM", "FROM " + base + "\n", []string{"RUN true\nFROM evil.example.com/xy"}, false, "does not allow image evil.example.com/xy:latest"},
		{"unparsable trigger", "FROM " + base + "\n", []string{"COPY --from="}, false, `policy rule "tenants" refuses the build: ONBUILD trigger 1 of base image`},
	}
	for _, tt := range tests {
		d := p.CheckOnbuild(Request{Identity: a, Dockerfile: analyze(t, tt.dockerfile)}, base, tt.triggers)
		if d.Allowed != tt.allowed || d.Rule != "tenants" || !strings.Contains(d.Reason, tt.reason) {
			t.Errorf("%s: CheckOnbuild(%q) = %+v, want allowed=%v rule tenants, reason containing %q", tt.name, tt.triggers, d, tt.allowed, tt.reason)
		}
	}
}

func TestExamplePolicyTenants(t *testing.T) {
	p, err := Load("../examples/policy/policy.yaml")
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	if w := p.Warnings(); len(w) != 0 {
		t.Errorf("example policy Warnings() = %q, want none", w)
	}
	runDecide(t, p, []decideCase{
		{name: "own image", id: gitlab("group/app", true, "main"), dests: []string{"registry.example.com/group/app:1"},
			dockerfile: "FROM registry.example.com/group/app/builder:1\nFROM registry.example.com/base/debian:12\n", allowed: true, rule: "gitlab-protected"},
		{name: "another project's image", id: gitlab("group/app", true, "main"), dests: []string{"registry.example.com/group/app:1"},
			dockerfile: "FROM registry.example.com/other/secret:1\n", rule: "gitlab-protected",
			reason: []string{"repository registry.example.com/other/secret is not in allow.from"}},
		{name: "another team's image", id: team("web"), dests: []string{"registry.example.com/teams/web/site:1"},
			dockerfile: "FROM registry.example.com/teams/db/secret:1\n", rule: "jenkins-teams",
			reason: []string{"repository registry.example.com/teams/db/secret is not in allow.from"}},
	})
}

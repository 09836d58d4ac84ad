package policy

import (
	"strings"
	"testing"

	"github.com/buildgw/buildgw/auth"
)

// TestCacheScope checks which identities share a cache under each scope,
// through a parsed policy's decision as the gateway gets it.
func TestCacheScope(t *testing.T) {
	p := mustParse(t, `rules:
  - name: shared-project
    match: {kind: oidc, project_path: "grp/shared"}
    allow: {destinations: ["r.example/**"]}
    cache: {scope: project}
  - name: group
    match: {kind: oidc, project_path: "grp2/*"}
    allow: {destinations: ["r.example/**"]}
    cache: {scope: namespace}
  - name: none
    match: {kind: oidc, project_path: "nocache/*"}
    allow: {destinations: ["r.example/**"]}
    cache: {scope: none}
  - name: per-identity
    match: {kind: oidc, project_path: "solo/*"}
    allow: {destinations: ["r.example/**"]}
    cache: {scope: identity}
  - name: gitlab
    match: {kind: oidc}
    allow: {destinations: ["r.example/**"]}
  - name: tokens
    match: {kind: token}
    allow: {destinations: ["r.example/**"]}
`)
	gl := func(project, ref, protected string) auth.Identity {
		ns := project[:strings.LastIndex(project, "/")]
		return auth.Identity{
			Name: "gitlab:project_path:" + project + ":ref:" + ref, Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com",
			Attributes: map[string]string{"project_path": project, "project_id": "id-" + project, "namespace_path": ns, "ref": ref, "ref_protected": protected},
		}
	}
	tenant := func(id auth.Identity) string {
		t.Helper()
		d := p.Decide(Request{Identity: id, Destinations: tags(t, "r.example/x/y:1"), Runner: "kaniko"})
		if !d.Allowed {
			t.Fatalf("Decide(%s) = %+v, want allowed", id.Name, d)
		}
		return d.CacheScope.Tenant(id)
	}
	appMain := gl("grp/app", "main", "true")
	otherIssuer := appMain
	otherIssuer.Issuer = "https://gitlab.evil.example"
	token := auth.Identity{Name: "ci", Kind: auth.KindToken, Attributes: map[string]string{"project_path": "grp/app", "project_id": "id-grp/app", "ref_protected": "true"}}
	renamed := gl("grp/app", "main", "true")
	renamed.Attributes["project_id"] = "id-recreated"
	unknownClass := gl("grp/app", "main", "true")
	delete(unknownClass.Attributes, "ref_protected")
	tests := []struct {
		name  string
		a, b  auth.Identity
		share bool
	}{
		{"protected branch and protected tag of a project", appMain, gl("grp/app", "v2", "true"), true},
		{"protected and unprotected ref of a project", appMain, gl("grp/app", "feature", "false"), false},
		{"two feature branches of a project", gl("grp/app", "f1", "false"), gl("grp/app", "f2", "false"), true},
		{"protected refs of two projects of a group", appMain, gl("grp/other", "main", "true"), false},
		{"unprotected ref of another project of the group", appMain, gl("grp/other", "feature", "false"), false},
		{"ref_protected missing", appMain, unknownClass, false},
		{"same claims from another issuer", appMain, otherIssuer, false},
		{"static token with a JWT's attributes", appMain, token, false},
		{"project recreated under the same path", appMain, renamed, false},
		{"scope project: protected and unprotected", gl("grp/shared", "main", "true"), gl("grp/shared", "f", "false"), true},
		{"scope namespace: two projects", gl("grp2/a", "main", "true"), gl("grp2/b", "f", "false"), true},
		{"scope identity: two refs", gl("solo/a", "main", "true"), gl("solo/a", "v1", "true"), false},
		{"scope identity: same ref", gl("solo/a", "main", "true"), gl("solo/a", "main", "true"), true},
		{"two static tokens", auth.Identity{Name: "a", Kind: auth.KindToken}, auth.Identity{Name: "b", Kind: auth.KindToken}, false},
		{"one static token", auth.Identity{Name: "a", Kind: auth.KindToken}, auth.Identity{Name: "a", Kind: auth.KindToken}, true},
	}
	for _, tc := range tests {
		ta, tb := tenant(tc.a), tenant(tc.b)
		if ta == "" || tb == "" {
			t.Errorf("%s: tenants %q, %q, want both set", tc.name, ta, tb)
		}
		if got := ta == tb; got != tc.share {
			t.Errorf("%s: share a cache = %v (%s, %s), want %v", tc.name, got, ta, tb, tc.share)
		}
	}
	if got := tenant(gl("nocache/a", "main", "true")); got != "" {
		t.Errorf("scope none: tenant %q, want none", got)
	}
	// A rule without cache: is the safe default.
	d := p.Decide(Request{Identity: appMain, Destinations: tags(t, "r.example/x/y:1"), Runner: "kaniko"})
	if d.CacheScope != CacheProjectRefClass {
		t.Errorf("default cache.scope = %q, want %q", d.CacheScope, CacheProjectRefClass)
	}
	if _, err := Parse([]byte("rules:\n  - name: r\n    match: {kind: token}\n    cache: {scope: everyone}\n")); err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "cache.scope") {
		t.Errorf("Parse(cache.scope: everyone) = %v, want a line 4 error about cache.scope", err)
	}
}

// TestTenant checks which identities count as one tenant against the
// queue's limits: a rule's tenant, by default its cache.scope.
func TestTenant(t *testing.T) {
	p := mustParse(t, `rules:
  - name: per-project
    match: {kind: oidc, project_path: "proj/*"}
    allow: {destinations: ["r.example/**"]}
    cache: {scope: identity}
    tenant: project
  - name: no-cache
    match: {kind: oidc, project_path: "nocache/*"}
    allow: {destinations: ["r.example/**"]}
    cache: {scope: none}
  - name: gitlab
    match: {kind: oidc}
    allow: {destinations: ["r.example/**"]}
`)
	gl := func(project, ref, protected string) auth.Identity {
		return auth.Identity{
			Name: "gitlab:project_path:" + project + ":ref:" + ref, Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com",
			Attributes: map[string]string{"project_path": project, "project_id": "id-" + project, "ref": ref, "ref_protected": protected},
		}
	}
	tenant := func(id auth.Identity) string {
		t.Helper()
		d := p.Decide(Request{Identity: id, Destinations: tags(t, "r.example/x/y:1"), Runner: "kaniko"})
		if !d.Allowed {
			t.Fatalf("Decide(%s) = %+v, want allowed", id.Name, d)
		}
		return d.Tenant.Tenant(id)
	}
	tests := []struct {
		name  string
		a, b  auth.Identity
		share bool
	}{
		{"tenant project: two branches", gl("proj/a", "f1", "false"), gl("proj/a", "f2", "false"), true},
		{"tenant project: protected and not", gl("proj/a", "main", "true"), gl("proj/a", "f2", "false"), true},
		{"tenant project: two projects", gl("proj/a", "f1", "false"), gl("proj/b", "f1", "false"), false},
		{"default, the cache scope: two feature branches", gl("app/a", "f1", "false"), gl("app/a", "f2", "false"), true},
		{"default, the cache scope: protected and not", gl("app/a", "main", "true"), gl("app/a", "f2", "false"), false},
		{"cache none: each identity", gl("nocache/a", "f1", "false"), gl("nocache/a", "f2", "false"), false},
	}
	for _, tc := range tests {
		ta, tb := tenant(tc.a), tenant(tc.b)
		if ta == "" || tb == "" {
			t.Errorf("%s: Tenant(%q), Tenant(%q) = %q, %q, want both set", tc.name, tc.a.Name, tc.b.Name, ta, tb)
		}
		if got := ta == tb; got != tc.share {
			t.Errorf("%s: Tenant(%q) == Tenant(%q) = %v (%s, %s), want %v", tc.name, tc.a.Name, tc.b.Name, got, ta, tb, tc.share)
		}
	}
	for _, v := range []string{"none", "everyone"} {
		_, err := Parse([]byte("rules:\n  - name: r\n    match: {kind: token}\n    tenant: " + v + "\n"))
		if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "tenant") {
			t.Errorf("Parse(%q) = %v, want a line 4 error about tenant", "tenant: "+v, err)
		}
	}
}

package policy

import (
	"strings"
	"testing"

	"github.com/buildgw/buildgw/auth"
)

// GitLab's own examples and rules for CI_COMMIT_REF_SLUG.
func TestSlug(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"main", "main"},
		{"Feature_Login", "feature-login"},
		{"feature/Login_Page", "feature-login-page"},
		{"macOS/v1.0.0", "macos-v1-0-0"},
		{"v17.2.0-rc42-ee", "v17-2-0-rc42-ee"},
		{"a__b", "a--b"}, // one "-" per character: GitLab does not merge runs
		{"_x_", "x"},
		{"--", ""},
		{"Über", "ber"}, // "ü" is one character, one "-", then trimmed
		{strings.Repeat("a", 62) + "/b", strings.Repeat("a", 62)},
		{strings.Repeat("B", 70), strings.Repeat("b", 63)},
	} {
		if got := slug(tt.in); got != tt.want {
			t.Errorf("slug(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDerivedPlaceholders(t *testing.T) {
	p := mustParse(t, `rules:
  - name: r
    match: {kind: oidc}
    allow:
      destinations: ["registry.example.com/{project_path_lc}"]
      tags: ["{ref_slug}", "{sha}"]
`)
	id := func(path, ref string) auth.Identity {
		return auth.Identity{Name: "x", Kind: auth.KindOIDC, Attributes: map[string]string{
			"project_path": path, "ref": ref, "sha": "0123abc"}}
	}
	runDecide(t, p, []decideCase{
		{name: "capitals and slug", id: id("Group/Sub/App", "Feature/Login_Page"),
			dests: []string{"registry.example.com/group/sub/app:feature-login-page", "registry.example.com/group/sub/app:0123abc"}, allowed: true, rule: "r"},
		{name: "raw ref", id: id("Group/App", "Feature_Login"),
			dests: []string{"registry.example.com/group/app:Feature_Login"}, rule: "r", reason: []string{"tag not in allow.tags"}},
		{name: "other project", id: id("Group/App", "main"),
			dests: []string{"registry.example.com/group/other:main"}, rule: "r", reason: []string{"repository not in allow.destinations"}},
		{name: "lowercasing makes no wildcard", id: id("Group/*", "main"),
			dests: []string{"registry.example.com/group/x:main"}, rule: "r", reason: []string{"project_path_lc"}},
		{name: "no ref", id: auth.Identity{Name: "x", Kind: auth.KindOIDC, Attributes: map[string]string{"project_path": "g/a"}},
			dests: []string{"registry.example.com/g/a:main"}, rule: "r", reason: []string{`no attribute "ref_slug"`}},
		// A ref of only punctuation slugs to "": unusable, never empty.
		{name: "empty slug", id: id("g/a", "__"), dests: []string{"registry.example.com/g/a:x"}, rule: "r", reason: []string{"ref_slug"}},
	})
	// An attribute literally named so wins over the derived value.
	got := p.Decide(Request{Identity: auth.Identity{Name: "x", Kind: auth.KindOIDC, Attributes: map[string]string{
		"project_path": "g/a", "project_path_lc": "g/b", "ref": "main", "ref_slug": "pinned"}},
		Destinations: tags(t, "registry.example.com/g/b:pinned"), Runner: "kaniko"})
	if !got.Allowed {
		t.Errorf("Decide(literal ref_slug and project_path_lc attributes) = %+v, want allowed", got)
	}
}

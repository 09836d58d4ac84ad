package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	rule := func(allow string) string {
		return "rules:\n  - name: r\n    match: {kind: token}\n    allow:\n" + allow
	}
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"at least one rule"}},
		{"no rules", "rules: []\n", []string{"no rules"}},
		{"bad yaml", "rules: [\n", []string{"parse policy", "line"}},
		{"not a list", "rules: {a: b}\n", []string{"parse policy"}},
		{"unknown top-level key", "rule: []\n", []string{"field rule not found"}},
		{"unknown rule key", "rules:\n  - name: r\n    matches: {kind: token}\n", []string{"line 3", "field matches not found"}},
		{"unknown allow key", rule("      deny_tag: [latest]\n"), []string{"line 5", "field deny_tag not found"}},
		{"unknown limit key", rule("      limits: {timeout_s: 3}\n"), []string{"field timeout_s not found"}},
		{"two documents", rule("      destinations: [r.example.com/aa]\n") + "---\nrules: []\n", []string{"single YAML document"}},
		{"duplicate rule names", "rules:\n  - name: r\n    match: {kind: token}\n  - name: r\n    match: {kind: oidc}\n",
			[]string{"line 4", `rule name "r" is already used by the rule on line 2`}},
		{"duplicate key", "rules:\n  - name: r\n    name: s\n    match: {kind: token}\n", []string{"already defined"}},
		{"missing name", "rules:\n  - match: {kind: token}\n", []string{"rule 1", "name is required"}},
		{"missing match", "rules:\n  - name: r\n", []string{`rule "r"`, "match is required"}},
		{"list as name", "rules:\n  - name: [a]\n    match: {kind: token}\n", []string{"line 2", "single value"}},
		{"bad match glob", "rules:\n  - name: r\n    match: {kind: \"[\"}\n", []string{"line 3", "not a valid glob"}},
		{"bad duration", rule("      limits:\n        timeout: 30 minutes\n"), []string{`rule "r"`, "line 6", "limits.timeout", "30 minutes"}},
		{"negative duration", rule("      limits: {timeout: -1s}\n"), []string{"limits.timeout"}},
		{"bad bytes", rule("      limits: {max_context_bytes: 1GB}\n"), []string{"limits.max_context_bytes"}},
		{"bad concurrency", rule("      limits: {max_concurrent: -1}\n"), []string{"limits.max_concurrent"}},
		{"placeholder name", rule("      destinations: [\"r.example.com/{project-path}\"]\n"), []string{"line 5", "plain attribute name"}},
		{"unclosed placeholder", rule("      destinations: [\"r.example.com/{project_path\"]\n"), []string{"unclosed"}},
		{"stray brace", rule("      destinations: [\"r.example.com/a}b\"]\n"), []string{"unmatched"}},
		{"partial double star", rule("      destinations: [\"r.example.com/a**\"]\n"), []string{"whole path segment"}},
		{"dot dot", rule("      destinations: [r.example.com/aa/../bb]\n"), []string{`".."`}},
		{"empty segment", rule("      destinations: [r.example.com//aa]\n"), []string{"empty path segment"}},
		{"uppercase", rule("      destinations: [r.example.com/Team]\n"), []string{"lowercase"}},
		{"glob chars", rule("      destinations: [\"r.example.com/a?\"]\n"), []string{"cannot be part of a repository"}},
		{"registry only", rule("      destinations: [r.example.com]\n"), []string{"names no repository"}},
		{"placeholder in registry", rule("      destinations: [\"{host}/aa\"]\n"), []string{"registry"}},
		{"glob in registry", rule("      destinations: [\"*.example.com/aa\"]\n"), []string{"registry"}},
		{"bad tag glob", rule("      tags: [\"v[0-9\"]\n"), []string{"line 5", "allow.tags", "not a valid glob"}},
		{"placeholder in deny_tags", rule("      deny_tags: [\"{ref}\"]\n"), []string{"allow.deny_tags", "not allowed"}},
		{"bad from", rule("      from: [\"https://r.example.com\"]\n"), []string{"allow.from"}},
		{"from with uppercase path", rule("      from: [r.example.com/AA]\n"), []string{"allow.from"}},
		{"from with a bad placeholder", rule("      from: [\"r.example.com/{a-b}\"]\n"), []string{"allow.from"}},
		{"empty runner", rule("      runners: [\"\"]\n"), []string{"allow.runners"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse(%s) = %v, nil, want an error", tt.name, p)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Parse(%s) = %v, want it to contain %q", tt.name, err, s)
				}
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: r
    match:
      kind: token
      ref_protected: true          # unquoted YAML boolean reads as "true"
    allow:
      destinations: [docker.io/team/app, "localhost:5000/*"]
      from: [docker.io, "localhost:5000", Registry.Example.com, "*"]
      limits: {timeout: 1h30m, max_concurrent: ~}
  - name: second
    match: {kind: oidc}
`)
	if got := strings.Join(p.Rules(), ","); got != "r,second" {
		t.Errorf("Rules() = %q, want r,second", got)
	}
	r := p.rules[0]
	if got := r.match[1]; got.key != "ref_protected" || got.pattern != "true" {
		t.Errorf("match[1] = %+v, want ref_protected=true", got)
	}
	if got := r.destinations[0].literalPrefix(); got != "index.docker.io/team/app" {
		t.Errorf("destinations[0] prefix = %q, want index.docker.io/team/app", got)
	}
	want := []string{"index.docker.io", "localhost:5000", "registry.example.com", "*"}
	var got []string
	for _, f := range r.from {
		if f.any {
			got = append(got, "*")
		} else {
			got = append(got, f.host)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("from = %q, want %q", got, want)
	}
	if len(r.runners) != 1 || r.runners[0] != "kaniko" || len(r.tags) != 1 || r.tags[0].src != "*" {
		t.Errorf("defaults: runners %q, tags %+v, want [kaniko] and [*]", r.runners, r.tags)
	}
	if r.limits.Timeout.String() != "1h30m0s" || r.limits.MaxConcurrent != 0 {
		t.Errorf("limits.timeout = %v, want 1h30m", r.limits.Timeout)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read policy") {
		t.Errorf("Load(missing) = %v, want a read error", err)
	}
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - name: r\n    match: {kind: token}\n    bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("Load(bad) = %v, want an error naming the file and line 4", err)
	}
}

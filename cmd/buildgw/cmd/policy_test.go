package cmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pol := write("policy.yaml", `rules:
  - name: own-project
    match: {kind: oidc, ref_protected: "true"}
    allow:
      destinations: ["registry.example.com/{project_path}"]
      from: [registry.example.com]
`)
	id := write("id.json", `{"name": "gitlab:a", "kind": "oidc", "attributes": {"project_path": "group/app", "ref_protected": "true"}}`)
	own := write("own.json", `{"destinations": ["registry.example.com/group/app:1"]}`)
	other := write("other.json", `{"destinations": ["registry.example.com/group/other:1"]}`)
	goodDF := write("Dockerfile.good", "FROM registry.example.com/base/busybox:1\n")
	badDF := write("Dockerfile.bad", "ARG BASE=evil.example.com/busybox:1\nFROM $BASE\n")
	broken := write("broken.yaml", "rules: [\n")

	tests := []struct {
		name    string
		args    []string
		wantErr bool
		want    string
	}{
		{"valid file", []string{pol}, false, "1 rules, valid"},
		{"broken file", []string{broken}, true, ""},
		{"own project", []string{pol, "--identity", id, "--spec", own, "--dockerfile", goodDF}, false, "decision: allow\nrule: own-project"},
		{"other project", []string{pol, "--identity", id, "--spec", other}, true, "group/other:1"},
		{"FROM behind ARG", []string{pol, "--identity", id, "--spec", own, "--dockerfile", badDF}, true, "evil.example.com"},
		{"identity without spec", []string{pol, "--identity", id}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := New()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(append([]string{"policy", "check"}, tc.args...))
			err := cmd.Execute()
			if (err != nil) != tc.wantErr || !strings.Contains(out.String(), tc.want) {
				t.Errorf("policy check %v = %v, %q; want error %v and output holding %q", tc.args, err, out.String(), tc.wantErr, tc.want)
			}
		})
	}
}

// TestPolicyCheckWarns checks that a bare registry in allow.from, which
// lets one tenant read another's private images, is pointed out.
func TestPolicyCheckWarns(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ from, want string }{
		{"[registry.example.com]", `warning: rule "r": allow.from "registry.example.com" lets its builds read any repository of registry.example.com, including other tenants' private images`},
		{`["registry.example.com/{project_path}/**"]`, ""},
	} {
		pol := filepath.Join(dir, "policy.yaml")
		doc := "rules:\n  - name: r\n    match: {kind: oidc}\n    allow:\n      destinations: [\"registry.example.com/{project_path}\"]\n      from: " + tc.from + "\n"
		if err := os.WriteFile(pol, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := New()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs([]string{"policy", "check", pol})
		err := cmd.Execute()
		if err != nil || !strings.Contains(errOut.String(), tc.want) || (tc.want == "" && errOut.Len() > 0) {
			t.Errorf("policy check (from: %s) = %v, stderr %q; want success and stderr holding %q", tc.from, err, errOut.String(), tc.want)
		}
	}
}

package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/auth"
)

func TestSecretBuildArgValues(t *testing.T) {
	tests := []struct {
		args   map[string]string
		marked []string
		want   []string
	}{
		{map[string]string{"X": "group/app", "FLAVOR": "jenkins", "BASE": "registry.example.com/base/debian:12", "GIT_SHA": "0123456789abcdef0123456789abcdef01234567"}, nil, nil},
		{map[string]string{"DB": "correct horse battery"}, []string{"DB"}, []string{"correct horse battery"}},
		{map[string]string{"NPM_TOKEN": "npm_x", "db_password": "hunter22", "AWS_SECRET_ACCESS_KEY": "k", "GIT_CREDENTIALS": "c", "BASIC_AUTH": "u:p"}, nil,
			[]string{"npm_x", "hunter22", "k", "c", "u:p"}},
		{map[string]string{"OPAQUE": "glpat-Xy7Kp2Qr9Lm4Nz8Wv3Ts"}, nil, []string{"glpat-Xy7Kp2Qr9Lm4Nz8Wv3Ts"}},
		{map[string]string{"VERSION": "Release2024Candidate", "APP": "MyApplication2Frontend"}, nil, nil}, // mixed case and digits, but words
		{map[string]string{"X": "npm_4fGh8Kq2Zr7Tw1Lp9Vx3"}, nil, []string{"npm_4fGh8Kq2Zr7Tw1Lp9Vx3"}},
	}
	for _, tt := range tests {
		got := SecretBuildArgValues(tt.args, tt.marked)
		slices.Sort(got)
		want := slices.Clone(tt.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("SecretBuildArgValues(%q, %q) = %q, want %q", tt.args, tt.marked, got, want)
		}
	}
}

// TestAuditedJobCannotScrubItself logs records the way the gateway does,
// with a build's secret build-arg values, and checks that the identity,
// destinations and base images stay readable whatever the build args
// hold, while a secret is still redacted from the error message.
func TestAuditedJobCannotScrubItself(t *testing.T) {
	gitlab := &auth.Identity{Name: "gitlab:project_path:group/app:ref_type:branch:ref:main", Kind: auth.KindOIDC, Issuer: "https://gitlab.example.com",
		Attributes: map[string]string{"project_path": "group/app", "namespace_path": "group"}}
	jenkins := &auth.Identity{Name: "jenkins:https://jenkins.example.com/job/app/", Kind: auth.KindOIDC, Issuer: "https://jenkins.example.com/oidc",
		Attributes: map[string]string{"sub": "https://jenkins.example.com/job/app/"}}
	const secret = "s3cr3t-value-of-the-db"
	tests := []struct {
		name   string
		id     *auth.Identity
		args   map[string]string
		marked []string
		// hidden must not appear anywhere in the line; the record's other
		// fields must come back exactly as logged.
		hidden string
	}{
		{name: "build arg equal to the project path", id: gitlab, args: map[string]string{"X": "group/app"}},
		{name: "flavour named like the ci", id: jenkins, args: map[string]string{"FLAVOR": "jenkins"}},
		{name: "base image as a build arg", id: gitlab, args: map[string]string{"BASE": "registry.example.com/group/app/base:1"}},
		{name: "project path marked secret", id: gitlab, args: map[string]string{"X": "group/app"}, marked: []string{"X"}},
		{name: "secret-marked value", id: gitlab, args: map[string]string{"DB": secret}, marked: []string{"DB"}, hidden: secret},
		{name: "secret by name", id: gitlab, args: map[string]string{"DB_PASSWORD": secret}, hidden: secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(WithWriter(&buf))
			if err != nil {
				t.Fatal(err)
			}
			rec := Record{
				Event: EventBuild, Identity: tt.id, Rule: "group/app", Action: "build.run",
				Destinations: []string{"registry.example.com/group/app:1"},
				BaseImages:   []string{"registry.example.com/group/app/base:1@sha256:0123", "jenkins/agent:1@sha256:4567"},
				Error:        "RUN ./migrate --db " + secret + " failed",
			}
			if err := l.Log(rec, SecretBuildArgValues(tt.args, tt.marked)...); err != nil {
				t.Fatal(err)
			}
			var got Record
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Identity == nil || got.Identity.Name != tt.id.Name || got.Identity.Attributes["project_path"] != tt.id.Attributes["project_path"] ||
				got.Identity.Attributes["sub"] != tt.id.Attributes["sub"] || got.Identity.Issuer != tt.id.Issuer {
				t.Errorf("Log with build args %q: identity = %+v, want %+v", tt.args, got.Identity, tt.id)
			}
			if !slices.Equal(got.Destinations, rec.Destinations) || !slices.Equal(got.BaseImages, rec.BaseImages) || got.Rule != rec.Rule {
				t.Errorf("Log with build args %q: destinations %q, base images %q, rule %q; want them as logged", tt.args, got.Destinations, got.BaseImages, got.Rule)
			}
			if strings.Contains(buf.String(), Redacted) != (tt.hidden != "") {
				t.Errorf("Log with build args %q = %s, want [REDACTED] only for a secret", tt.args, buf.String())
			}
			if tt.hidden != "" && (strings.Contains(buf.String(), tt.hidden) || got.Error != "RUN ./migrate --db [REDACTED] failed") {
				t.Errorf("Log with secret build args %q: error = %q, want the secret redacted", tt.args, got.Error)
			}
		})
	}
}

package testoidc

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/oidc"
)

// TestAgainstAuthenticator checks the issuer and its tokens against the
// gateway's own OIDC authenticator.
func TestAgainstAuthenticator(t *testing.T) {
	const aud = "https://buildgw.test"
	gitlab := Start(t, Options{})
	jenkins := Start(t, Options{Prefix: "/oidc", JWKSPath: "/oidc/jwks", Alg: jose.ES256})
	a, err := oidc.New(context.Background(), []oidc.Issuer{
		{Name: "gitlab", URL: gitlab.URL, Audiences: []string{aud}},
		{Name: "jenkins", URL: jenkins.URL, Audiences: []string{aud}},
	})
	if err != nil {
		t.Fatal(err)
	}
	authn := func(tok string) (auth.Identity, error) {
		r := httptest.NewRequest("POST", "/v1/builds", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return a.Authenticate(r)
	}
	now := time.Now()
	gl := gitlab.GitLabClaims(aud, GitLab{ProjectPath: "group/sub/app", Protected: true}, now)
	valid := gitlab.MustMint(t, gl)
	id, err := authn(valid)
	if err != nil || id.Name != "gitlab:project_path:group/sub/app:ref_type:branch:ref:main" ||
		id.Attributes["namespace_path"] != "group/sub" || id.Attributes["ref_protected"] != "true" {
		t.Fatalf("valid gitlab token: %+v, %v", id, err)
	}
	if id, err := authn(jenkins.MustMint(t, jenkins.JenkinsClaims(aud, "https://jenkins.test/job/x/", 7, now))); err != nil || id.Attributes["build_number"] != "7" {
		t.Fatalf("valid jenkins token: %+v, %v", id, err)
	}

	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for name, tc := range map[string]struct{ tok, reason string }{
		"alg none":    {must(AlgNone(gl)), "unsupported token algorithm"},
		"hs256":       {must(gitlab.HS256WithPublicKey(gl)), "unsupported token algorithm"},
		"unknown kid": {must(gitlab.UnknownKID(gl)), "bad token signature"},
		"tampered":    {must(Tamper(valid, func(c map[string]any) { c["project_path"] = "group/other" })), "bad token signature"},
	} {
		var ae *auth.Error
		if _, err := authn(tc.tok); !errors.As(err, &ae) || ae.Reason != tc.reason {
			t.Errorf("%s: %v, want %q", name, err, tc.reason)
		}
	}

	_, before := gitlab.Counts()
	if _, err := gitlab.Rotate(false); err != nil {
		t.Fatal(err)
	}
	if _, err := authn(gitlab.MustMint(t, gl)); err != nil {
		t.Errorf("token of the rotated key: %v", err)
	}
	if _, after := gitlab.Counts(); after != before+1 {
		t.Errorf("JWKS fetches %d -> %d, want one refetch for the new kid", before, after)
	}
	if _, err := authn(valid); err == nil {
		t.Errorf("token of the withdrawn key accepted")
	}
}

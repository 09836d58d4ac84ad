package oidc_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth/oidc"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// Forged tokens must not turn the gateway into a client that hammers the
// issuer: a bad signature with a known key ID costs no fetch, and unknown
// key IDs cost a few fetches, not one each.
func TestForgedTokensAreCheapForTheIssuer(t *testing.T) {
	is := testoidc.Start(t, testoidc.Options{})
	a, err := oidc.New(context.Background(), []oidc.Issuer{{Name: "gl", URL: is.URL, Audiences: []string{"aud"}}})
	if err != nil {
		t.Fatal(err)
	}
	claims := is.GitLabClaims("aud", testoidc.GitLab{ProjectPath: "group/app", Protected: true}, time.Now())
	req := func(tok string) error {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := a.Authenticate(r)
		return err
	}
	if err := req(is.MustMint(t, claims)); err != nil {
		t.Fatalf("Authenticate(valid) = %v, want nil", err)
	}
	_, before := is.Counts()

	tampered, err := testoidc.Tamper(is.MustMint(t, claims), func(c map[string]any) { c["project_path"] = "group/other" })
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if err := req(tampered); err == nil {
			t.Fatal("Authenticate(tampered) = nil, want an error")
		}
	}
	if _, after := is.Counts(); after != before {
		t.Errorf("key fetches for 200 tampered tokens with a known kid = %d, want 0", after-before)
	}

	for i := range 200 {
		tok := is.MustMint(t, claims, testoidc.WithKID(fmt.Sprintf("forged-%d", i)))
		if err := req(tok); err == nil {
			t.Fatal("Authenticate(unknown kid) = nil, want an error")
		}
	}
	if _, after := is.Counts(); after-before > 4 {
		t.Errorf("key fetches for 200 tokens with unknown kids = %d, want at most 4", after-before)
	}
}

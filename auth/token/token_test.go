package token

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/authtest"
)

func TestHashToken(t *testing.T) {
	tests := []struct {
		tok, want string
	}{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := HashToken(tt.tok); got != tt.want {
			t.Errorf("HashToken(%q) = %q, want %q", tt.tok, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	h := HashToken("secret")
	tests := []struct {
		name    string
		tokens  []Token
		wantErr string // substring; "" means success
	}{
		{"none", nil, ""},
		{"plain hash", []Token{{Name: "ci", SHA256: h}}, ""},
		{"prefixed hash", []Token{{Name: "ci", SHA256: "sha256:" + h}}, ""},
		{"upper-case hash", []Token{{Name: "ci", SHA256: strings.ToUpper(h)}}, ""},
		{"empty name", []Token{{SHA256: h}}, "token #1: name is empty"},
		{"duplicate name", []Token{{Name: "ci", SHA256: h}, {Name: "ci", SHA256: HashToken("other")}}, `token "ci": name is used twice`},
		{"duplicate hash", []Token{{Name: "a", SHA256: h}, {Name: "b", SHA256: "sha256:" + h}}, `token "b": same hash as token "a"`},
		{"not hex", []Token{{Name: "ci", SHA256: "secret"}}, `token "ci": sha256 is not a hex-encoded sha256 hash`},
		{"short hash", []Token{{Name: "ci", SHA256: h[:62]}}, "not a hex-encoded sha256"},
		{"long hash", []Token{{Name: "ci", SHA256: h + "00"}}, "not a hex-encoded sha256"},
		{"empty hash", []Token{{Name: "ci"}}, "not a hex-encoded sha256"},
		{"other prefix", []Token{{Name: "ci", SHA256: "sha512:" + h}}, "not a hex-encoded sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.tokens)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New(%v) = %v, want no error", tt.tokens, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("New(%v) = %v, want error containing %q", tt.tokens, err, tt.wantErr)
			}
		})
	}
}

func TestNewErrorDoesNotLeakMisplacedToken(t *testing.T) {
	const tok = "glpat-this-is-the-token-not-its-hash"
	_, err := New([]Token{{Name: "ci", SHA256: tok}})
	if err == nil || strings.Contains(err.Error(), tok) {
		t.Errorf("New with the token as hash = %v, want an error that does not quote it", err)
	}
}

// jwt is shaped like a JWT: header {"alg":"RS256","typ":"JWT"}.
const jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2ln"

func TestAuthenticate(t *testing.T) {
	a, err := New([]Token{
		{Name: "laptop", SHA256: HashToken("tok-laptop")},
		{Name: "jenkins", SHA256: "sha256:" + HashToken("tok-jenkins"), Attributes: map[string]string{"team": "infra"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		header  string // Authorization; "" means none
		want    auth.Identity
		wantErr error
	}{
		{"no header", "", auth.Identity{}, auth.ErrNoCredentials},
		{"basic auth", "Basic dXNlcjpwYXNz", auth.Identity{}, auth.ErrNoCredentials},
		{"bearer without token", "Bearer ", auth.Identity{}, auth.ErrNoCredentials},
		{"bearer with blanks", "Bearer    ", auth.Identity{}, auth.ErrNoCredentials},
		{"jwt is for oidc", "Bearer " + jwt, auth.Identity{}, auth.ErrNoCredentials},
		{"first token", "Bearer tok-laptop", auth.Identity{Name: "laptop", Kind: auth.KindToken}, nil},
		{"lower-case scheme", "bearer tok-laptop", auth.Identity{Name: "laptop", Kind: auth.KindToken}, nil},
		{"trailing space", "Bearer tok-laptop ", auth.Identity{Name: "laptop", Kind: auth.KindToken}, nil},
		{"second token with attributes", "Bearer tok-jenkins",
			auth.Identity{Name: "jenkins", Kind: auth.KindToken, Attributes: map[string]string{"team": "infra"}}, nil},
		{"unknown token", "Bearer tok-nobody", auth.Identity{}, &auth.Error{Reason: "invalid token"}},
		{"prefix of a token", "Bearer tok-lap", auth.Identity{}, &auth.Error{Reason: "invalid token"}},
		{"the hash itself", "Bearer " + HashToken("tok-laptop"), auth.Identity{}, &auth.Error{Reason: "invalid token"}},
		{"two dots but no jwt", "Bearer a.b.c", auth.Identity{}, &auth.Error{Reason: "invalid token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/builds", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			got, err := a.Authenticate(r)
			if !authtest.SameError(err, tt.wantErr) {
				t.Fatalf("Authenticate(%q) error = %v, want %v", tt.header, err, tt.wantErr)
			}
			if !authtest.SameIdentity(got, tt.want) {
				t.Errorf("Authenticate(%q) = %+v, want %+v", tt.header, got, tt.want)
			}
		})
	}
}

func TestAuthenticateReturnsACopyOfAttributes(t *testing.T) {
	attrs := map[string]string{"team": "infra"}
	a, err := New([]Token{{Name: "ci", SHA256: HashToken("t"), Attributes: attrs}})
	if err != nil {
		t.Fatal(err)
	}
	attrs["team"] = "changed after New"
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer t")
	id, err := a.Authenticate(r)
	if err != nil {
		t.Fatal(err)
	}
	id.Attributes["team"] = "changed by a caller"
	id, _ = a.Authenticate(r)
	if got := id.Attributes["team"]; got != "infra" {
		t.Errorf(`Attributes["team"] = %q, want "infra"`, got)
	}
}

func TestIsJWT(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{jwt, true},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", true},     // alg none, empty signature
		{"eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln", false}, // no alg
		{"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0", false},    // two parts
		{"eyJhbGciOiJSUzI1NiJ9.a.b.c", false},              // four parts
		{"eyJhbGciOiJSUzI1NiJ9.e+J9.c2ln", false},          // not base64url
		{"bm90IGpzb24.eyJzdWIiOiJ4In0.c2ln", false},        // header not JSON
		{"glpat-abcdef", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsJWT(tt.s); got != tt.want {
			t.Errorf("IsJWT(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// Package token authenticates static bearer tokens. Tokens are configured
// only as sha256 hashes, so the configuration never holds a usable secret,
// and a presented token is compared with every stored hash in constant time,
// so response timing reveals neither the token nor which one matched.
package token

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/buildgw/buildgw/auth"
)

// Token is one configured static token.
type Token struct {
	// Name identifies the caller and owns its builds. Required and unique.
	Name string
	// SHA256 is the hex sha256 of the token (see HashToken), optionally
	// prefixed with "sha256:".
	SHA256 string
	// Attributes are what policy matches on for this token. Optional.
	Attributes map[string]string
}

// Authenticator checks the request's bearer token against static tokens.
type Authenticator struct {
	tokens []stored
}

type stored struct {
	name  string
	hash  [sha256.Size]byte
	attrs map[string]string
}

var _ auth.Authenticator = (*Authenticator)(nil)

// New returns an Authenticator for tokens. It refuses empty or duplicate
// names, hashes that are not 32 hex-encoded bytes, and two names sharing a
// hash, which would make the identity of a request ambiguous.
func New(tokens []Token) (*Authenticator, error) {
	a := &Authenticator{tokens: make([]stored, 0, len(tokens))}
	names := make(map[string]bool, len(tokens))
	hashes := make(map[[sha256.Size]byte]string, len(tokens))
	for i, t := range tokens {
		if t.Name == "" {
			return nil, fmt.Errorf("token #%d: name is empty", i+1)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("token %q: name is used twice", t.Name)
		}
		names[t.Name] = true
		h, err := parseHash(t.SHA256)
		if err != nil {
			return nil, fmt.Errorf("token %q: %w", t.Name, err)
		}
		if other, dup := hashes[h]; dup {
			return nil, fmt.Errorf("token %q: same hash as token %q", t.Name, other)
		}
		hashes[h] = t.Name
		a.tokens = append(a.tokens, stored{name: t.Name, hash: h, attrs: maps.Clone(t.Attributes)})
	}
	return a, nil
}

func parseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	b, err := hex.DecodeString(strings.TrimPrefix(s, "sha256:"))
	if err != nil || len(b) != sha256.Size {
		// The error does not quote s: a misconfigured "hash" may well be
		// the token itself.
		return h, fmt.Errorf("sha256 is not a hex-encoded sha256 hash (64 hex digits)")
	}
	copy(h[:], b)
	return h, nil
}

// HashToken returns the hex sha256 under which a token is configured.
func HashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// Authenticate returns the identity of the request's bearer token. It
// returns auth.ErrNoCredentials when there is no bearer token or when the
// bearer is a JWT, which is the OIDC authenticator's to check.
func (a *Authenticator) Authenticate(r *http.Request) (auth.Identity, error) {
	tok, ok := Bearer(r)
	if !ok || IsJWT(tok) {
		return auth.Identity{}, auth.ErrNoCredentials
	}
	h := sha256.Sum256([]byte(tok))
	// Compare with every hash and select the match without branching, so
	// the time taken does not depend on whether or where a token matched.
	match := -1
	for i := range a.tokens {
		eq := subtle.ConstantTimeCompare(h[:], a.tokens[i].hash[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return auth.Identity{}, &auth.Error{Reason: "invalid token"}
	}
	t := a.tokens[match]
	return auth.Identity{Name: t.name, Kind: auth.KindToken, Attributes: maps.Clone(t.attrs)}, nil
}

// Bearer returns the token of the request's "Authorization: Bearer"
// header. The scheme is case-insensitive (RFC 9110); an empty token counts
// as none.
func Bearer(r *http.Request) (string, bool) {
	const prefix = "bearer "
	h := r.Header.Get("Authorization")
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(prefix):])
	return tok, tok != ""
}

// IsJWT reports whether s is shaped like a signed JWT: three base64url
// parts separated by dots whose first part is a JSON header naming an
// "alg". It does not verify anything; it only tells which authenticator a
// bearer token is meant for.
func IsJWT(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts[1:] {
		if strings.Trim(p, base64URLAlphabet) != "" {
			return false
		}
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	return json.Unmarshal(hdr, &h) == nil && h.Alg != nil
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

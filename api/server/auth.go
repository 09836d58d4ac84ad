package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/buildgw/buildgw/api"
)

// Identity is who a request comes from.
type Identity struct {
	// Name identifies the caller; builds are visible only to their owner.
	Name string
}

// Authenticator turns a request's credentials into an Identity.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
}

// TokenAuth authenticates static bearer tokens, stored only as sha256
// hashes.
type TokenAuth struct {
	tokens []storedToken
}

type storedToken struct {
	name string
	hash [sha256.Size]byte
}

var _ Authenticator = (*TokenAuth)(nil)

// NewTokenAuth takes token names mapped to the hex sha256 of each token.
func NewTokenAuth(hashes map[string]string) (*TokenAuth, error) {
	a := &TokenAuth{}
	for name, h := range hashes {
		b, err := hex.DecodeString(strings.TrimPrefix(h, "sha256:"))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("token %q: want a hex sha256 hash", name)
		}
		t := storedToken{name: name}
		copy(t.hash[:], b)
		a.tokens = append(a.tokens, t)
	}
	return a, nil
}

// HashToken returns the hex sha256 under which a token is stored.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Authenticate compares the bearer token's hash with every stored hash in
// constant time, so timing reveals neither the token nor which one matched.
func (a *TokenAuth) Authenticate(r *http.Request) (Identity, error) {
	tok, ok := bearer(r)
	if !ok {
		return Identity{}, errorf(http.StatusUnauthorized, api.CodeUnauthorized, "missing bearer token")
	}
	h := sha256.Sum256([]byte(tok))
	match := -1
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], a.tokens[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Identity{}, errorf(http.StatusUnauthorized, api.CodeUnauthorized, "invalid token")
	}
	return Identity{Name: a.tokens[match].name}, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

const identityKey = "buildgw.identity"

func (s *Server) authMiddleware(c *gin.Context) {
	id, err := s.auth.Authenticate(c.Request)
	if err != nil {
		if s.metrics != nil {
			s.metrics.authFailures.Inc()
		}
		s.log.Info("authentication failed", "remote", c.ClientIP(), "path", c.Request.URL.Path, "error", err)
		c.Header("WWW-Authenticate", `Bearer realm="buildgw"`)
		c.Error(err)
		c.Abort()
		return
	}
	c.Set(identityKey, id)
	c.Next()
}

func identity(c *gin.Context) Identity {
	return c.MustGet(identityKey).(Identity)
}

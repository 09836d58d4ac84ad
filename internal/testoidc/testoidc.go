// Package testoidc is a local OIDC issuer for tests and benchmarks: an
// httptest server on loopback (plain HTTP, which auth/oidc accepts on
// loopback only) serving a discovery document and a JWKS, shaped like
// GitLab (/.well-known/openid-configuration, keys at /oauth/discovery/keys)
// or, with a path prefix, like the Jenkins oidc-provider plugin.
//
// It mints tokens with go-jose, rotates keys, and mints the classic
// attack tokens: alg none, HS256 keyed with the RSA public key, a tampered
// payload under a valid signature, and a kid the issuer never published.
package testoidc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// GitLabJWKSPath is where GitLab publishes its keys.
const GitLabJWKSPath = "/oauth/discovery/keys"

// Key is a signing key of an issuer.
type Key struct {
	KID     string
	Alg     jose.SignatureAlgorithm // RS256 or ES256
	Private crypto.Signer
}

// NewKey returns a fresh RSA-2048 key for RS256 or ECDSA P-256 key for
// ES256, with a random kid.
func NewKey(alg jose.SignatureAlgorithm) (*Key, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	k := &Key{KID: strings.ToLower(string(alg)) + "-" + hex.EncodeToString(b[:]), Alg: alg}
	var err error
	switch alg {
	case jose.RS256:
		k.Private, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k.Private, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("testoidc: unsupported algorithm %s (want RS256 or ES256)", alg)
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

// PublicPEM is the key's public half as a PEM "PUBLIC KEY" block: what an
// attacker downloads from the JWKS and uses as an HMAC secret.
func (k *Key) PublicPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Private.Public())
	if err != nil {
		panic(err) // RSA and ECDSA keys always marshal
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Options shape an Issuer.
type Options struct {
	// Prefix is the issuer's path below the server root, e.g. "/oidc" for
	// Jenkins; default "" (GitLab: the issuer is the server's root URL).
	Prefix string
	// JWKSPath is the key set's path; default GitLabJWKSPath.
	JWKSPath string
	// Alg of the first signing key: RS256 (default) or ES256.
	Alg jose.SignatureAlgorithm
}

// Issuer is a running local issuer.
type Issuer struct {
	// URL is the issuer, as in the tokens' iss claim.
	URL string
	// JWKSURL is where its keys are published.
	JWKSURL string

	srv *httptest.Server

	mu          sync.Mutex
	published   []*Key
	signing     *Key
	discoveries int
	jwksFetches int
}

// New starts an issuer on 127.0.0.1. Close it when done.
func New(o Options) (*Issuer, error) {
	if o.JWKSPath == "" {
		o.JWKSPath = GitLabJWKSPath
	}
	if o.Alg == "" {
		o.Alg = jose.RS256
	}
	if o.Prefix != "" && (!strings.HasPrefix(o.Prefix, "/") || strings.HasSuffix(o.Prefix, "/")) {
		return nil, fmt.Errorf("testoidc: prefix %q must start and not end with /", o.Prefix)
	}
	k, err := NewKey(o.Alg)
	if err != nil {
		return nil, err
	}
	is := &Issuer{published: []*Key{k}, signing: k}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+o.Prefix+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		is.discoveries++
		is.mu.Unlock()
		writeJSON(w, map[string]any{
			"issuer":                                is.URL,
			"jwks_uri":                              is.JWKSURL,
			"authorization_endpoint":                is.URL + "/oauth/authorize",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("GET "+o.JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, is.jwks())
	})
	is.srv = httptest.NewUnstartedServer(mux)
	is.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	is.srv.Start()
	is.URL = is.srv.URL + o.Prefix
	is.JWKSURL = is.srv.URL + o.JWKSPath
	return is, nil
}

// Start is New for tests: it fails t on error and closes the issuer when
// the test ends.
func Start(t testing.TB, o Options) *Issuer {
	t.Helper()
	is, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(is.Close)
	return is
}

// Close stops the server.
func (is *Issuer) Close() { is.srv.Close() }

func (is *Issuer) jwks() jose.JSONWebKeySet {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.jwksFetches++
	var set jose.JSONWebKeySet
	for _, k := range is.published {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.KID, Algorithm: string(k.Alg), Use: "sig"})
	}
	return set
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// Counts returns how often the discovery document and the key set were
// fetched.
func (is *Issuer) Counts() (discoveries, jwksFetches int) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.discoveries, is.jwksFetches
}

// SigningKey is the key Mint signs with by default.
func (is *Issuer) SigningKey() *Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.signing
}

// Rotate makes a new key of the current key's algorithm the signing key.
// With keepOld the old key stays published (GitLab's overlap period),
// otherwise it is withdrawn, so tokens it signed no longer verify once the
// verifier refetches the key set.
func (is *Issuer) Rotate(keepOld bool) (*Key, error) {
	is.mu.Lock()
	alg := is.signing.Alg
	is.mu.Unlock()
	k, err := NewKey(alg)
	if err != nil {
		return nil, err
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	if keepOld {
		is.published = append(is.published, k)
	} else {
		is.published = []*Key{k}
	}
	is.signing = k
	return k, nil
}

// MintOption changes how Mint signs.
type MintOption func(*mintOptions)

type mintOptions struct {
	key *Key
	kid *string
}

// WithKey signs with k instead of the issuer's signing key; k need not be
// published (an unknown-kid token).
func WithKey(k *Key) MintOption { return func(o *mintOptions) { o.key = k } }

// WithKID puts kid in the header instead of the key's own.
func WithKID(kid string) MintOption { return func(o *mintOptions) { o.kid = &kid } }

// Mint signs claims as a compact JWS with typ JWT.
func (is *Issuer) Mint(claims map[string]any, opts ...MintOption) (string, error) {
	o := mintOptions{key: is.SigningKey()}
	for _, opt := range opts {
		opt(&o)
	}
	kid := o.key.KID
	if o.kid != nil {
		kid = *o.kid
	}
	return sign(jose.SigningKey{Algorithm: o.key.Alg, Key: jose.JSONWebKey{Key: o.key.Private, KeyID: kid}}, nil, claims)
}

// MustMint is Mint for tests.
func (is *Issuer) MustMint(t testing.TB, claims map[string]any, opts ...MintOption) string {
	t.Helper()
	tok, err := is.Mint(claims, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func sign(key jose.SigningKey, headers map[jose.HeaderKey]any, claims map[string]any) (string, error) {
	so := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range headers {
		so = so.WithHeader(k, v)
	}
	signer, err := jose.NewSigner(key, so)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// AlgNone returns an unsigned token: header {"alg":"none","typ":"JWT"}
// and an empty signature.
func AlgNone(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + ".", nil
}

// HS256WithPublicKey returns a token "signed" with HMAC-SHA256 keyed with
// the PEM of the issuer's signing key's public half, under its kid: the
// algorithm-confusion forgery against verifiers that let the token pick
// the algorithm.
func (is *Issuer) HS256WithPublicKey(claims map[string]any) (string, error) {
	k := is.SigningKey()
	return sign(jose.SigningKey{Algorithm: jose.HS256, Key: k.PublicPEM()}, map[jose.HeaderKey]any{"kid": k.KID}, claims)
}

// UnknownKID returns a token signed by a fresh key that the issuer never
// published, with a kid it never had.
func (is *Issuer) UnknownKID(claims map[string]any) (string, error) {
	k, err := NewKey(is.SigningKey().Alg)
	if err != nil {
		return "", err
	}
	return is.Mint(claims, WithKey(k), WithKID("unknown-"+k.KID))
}

// Tamper replaces the payload of a signed token with its claims changed by
// f, keeping header and signature.
func Tamper(tok string, f func(claims map[string]any)) (string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", errors.New("testoidc: not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		return "", err
	}
	f(c)
	if b, err = json.Marshal(c); err != nil {
		return "", err
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, "."), nil
}

// GitLab describes the job a GitLab id_token is minted for.
type GitLab struct {
	ProjectPath string // "group/app"
	Ref         string // default "main"
	RefType     string // default "branch"
	Protected   bool
}

// GitLabClaims returns the claims of a GitLab CI id_token for job g with
// audience aud, valid from now for 5 minutes. ref_protected is the string
// "true" or "false", as GitLab sends it.
func (is *Issuer) GitLabClaims(aud string, g GitLab, now time.Time) map[string]any {
	if g.Ref == "" {
		g.Ref = "main"
	}
	if g.RefType == "" {
		g.RefType = "branch"
	}
	ns := g.ProjectPath
	if i := strings.LastIndex(ns, "/"); i >= 0 {
		ns = ns[:i]
	}
	return map[string]any{
		"iss":                   is.URL,
		"aud":                   aud,
		"sub":                   "project_path:" + g.ProjectPath + ":ref_type:" + g.RefType + ":ref:" + g.Ref,
		"iat":                   now.Unix(),
		"nbf":                   now.Unix() - 5,
		"exp":                   now.Add(5 * time.Minute).Unix(),
		"jti":                   fmt.Sprintf("jti-%d", now.UnixNano()),
		"namespace_id":          "12",
		"namespace_path":        ns,
		"project_id":            "34",
		"project_path":          g.ProjectPath,
		"user_id":               "56",
		"user_login":            "alice",
		"user_email":            "alice@example.com",
		"pipeline_id":           "1001",
		"pipeline_source":       "push",
		"job_id":                "2002",
		"ref":                   g.Ref,
		"ref_type":              g.RefType,
		"ref_path":              "refs/heads/" + g.Ref,
		"ref_protected":         fmt.Sprint(g.Protected),
		"runner_id":             7,
		"runner_environment":    "self-hosted",
		"sha":                   "0123456789abcdef0123456789abcdef01234567",
		"project_visibility":    "private",
		"environment_protected": false,
	}
}

// JenkinsClaims returns the claims of a Jenkins oidc-provider token for
// the job at jobURL, valid from now for an hour.
func (is *Issuer) JenkinsClaims(aud, jobURL string, build int, now time.Time) map[string]any {
	return map[string]any{
		"iss":          is.URL,
		"aud":          aud,
		"sub":          jobURL,
		"iat":          now.Unix(),
		"exp":          now.Add(time.Hour).Unix(),
		"build_number": build,
	}
}

// With returns a copy of claims changed by f.
func With(claims map[string]any, f func(c map[string]any)) map[string]any {
	c := make(map[string]any, len(claims))
	for k, v := range claims {
		c[k] = v
	}
	f(c)
	return c
}

// Package oidc authenticates OIDC JWTs that CI systems mint for their jobs:
// GitLab id_tokens and tokens of the Jenkins oidc-provider plugin. Tokens
// are verified with github.com/coreos/go-oidc against the issuer's JWKS
// (signature, algorithm, iss, exp) and here for aud and nbf, each with the
// issuer's clock skew.
//
// Discovery is lazy: the gateway starts, and serves static tokens and
// certificates, while GitLab or Jenkins is down. The first token of an
// issuer triggers discovery; a failure is retried on a later request.
package oidc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/token"
)

// Defaults and limits of Issuer fields.
const (
	DefaultClockSkew = 60 * time.Second
	MaxClockSkew     = 5 * time.Minute
	DefaultNameClaim = "sub"
	// DefaultMaxTokenAge bounds a token's lifetime (exp - iat) when an
	// Issuer sets none. GitLab id_tokens live as long as the job's
	// timeout (hours); the Jenkins oidc-provider's default is one hour.
	DefaultMaxTokenAge = 24 * time.Hour
)

// DefaultAlgorithms returns the signing algorithms accepted when an Issuer
// names none: what GitLab (RS256) and the Jenkins oidc-provider (RS256,
// or ES256 with an EC key) sign with.
func DefaultAlgorithms() []string { return []string{"RS256", "ES256"} }

// asymmetricAlgorithms are the algorithms an Issuer may accept. HMAC
// algorithms are excluded because their "key" would have to be a shared
// secret (and HS256 over the issuer's public key is a classic forgery);
// "none" because it is no signature at all.
const asymmetricAlgorithms = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"

func isAsymmetric(alg string) bool {
	return slices.Contains(strings.Split(asymmetricAlgorithms, ", "), alg)
}

const (
	// maxTokenSize bounds the work spent on a bearer token before its
	// signature is checked; CI tokens are 1 to 2 KiB.
	maxTokenSize = 16 << 10
	// discoveryRetryInterval spaces discovery attempts after a failure,
	// so a down issuer is not hit by every request.
	discoveryRetryInterval = 10 * time.Second
	// discoveryTimeout bounds one discovery, during which other requests
	// for the same issuer wait.
	discoveryTimeout = 10 * time.Second
	// defaultHTTPTimeout applies to discovery and JWKS fetches when the
	// Issuer brings no HTTPClient.
	defaultHTTPTimeout = 10 * time.Second
)

// Issuer is a trusted token issuer.
type Issuer struct {
	// Name is a short name ("gitlab", "jenkins") that prefixes the names of
	// the identities it vouches for. Letters, digits, '.', '_' and '-'.
	Name string
	// URL is the issuer, exactly as in the tokens' "iss" claim, e.g.
	// "https://gitlab.example.com" or "https://jenkins.example.com/oidc".
	// It must be https, except on loopback.
	URL string
	// Audiences are accepted "aud" values; a token must name at least one.
	// At least one is required: for GitLab, the aud set in the job's
	// id_tokens, usually the gateway URL.
	Audiences []string
	// Algorithms are the accepted signing algorithms; default
	// DefaultAlgorithms(). Only asymmetric algorithms are allowed.
	Algorithms []string
	// ClockSkew is tolerated on exp and nbf; default DefaultClockSkew, at
	// most MaxClockSkew.
	ClockSkew time.Duration
	// NameClaim is the claim that names the caller after "Name:"; default
	// DefaultNameClaim ("sub").
	NameClaim string
	// JWKSURL overrides the jwks_uri from discovery; with it, discovery is
	// skipped altogether.
	JWKSURL string
	// HTTPClient fetches discovery and keys, e.g. with a private CA;
	// default an http.Client with a 10s timeout.
	HTTPClient *http.Client
	// MaxTokenAge refuses tokens whose lifetime, exp - iat, is longer: a
	// token leaked from a job log stays usable for at most this long.
	// A token without iat is refused too, since its lifetime cannot be
	// told (GitLab and the Jenkins oidc-provider always set it). Default
	// DefaultMaxTokenAge.
	MaxTokenAge time.Duration
}

// Authenticator verifies bearer JWTs of the configured issuers.
type Authenticator struct {
	issuers map[string]*issuer // by URL
	now     func() time.Time
}

var _ auth.Authenticator = (*Authenticator)(nil)

// issuer is an Issuer with its lazily built verifier.
type issuer struct {
	Issuer
	config *gooidc.Config
	// base is the context of background fetches: it carries HTTPClient,
	// which is how go-oidc takes a client.
	base context.Context
	now  func() time.Time

	mu       sync.Mutex
	verifier *gooidc.IDTokenVerifier // nil until discovered
	lastErr  error                   // of the last failed discovery
	failedAt time.Time
}

// New returns an Authenticator for issuers, after validating their
// configuration. It makes no network calls: see the package comment. ctx
// supplies values, not a deadline, for the background fetches of
// discovery documents and keys.
func New(ctx context.Context, issuers []Issuer) (*Authenticator, error) {
	if len(issuers) == 0 {
		return nil, errors.New("configuring oidc: no issuers")
	}
	a := &Authenticator{issuers: make(map[string]*issuer, len(issuers)), now: time.Now}
	names := make(map[string]bool, len(issuers))
	for i, cfg := range issuers {
		is, err := a.newIssuer(ctx, cfg)
		if err != nil {
			label := cfg.Name
			if label == "" {
				label = fmt.Sprintf("#%d", i+1)
			}
			return nil, fmt.Errorf("configuring oidc issuer %s: %w", label, err)
		}
		if names[is.Name] {
			return nil, fmt.Errorf("configuring oidc issuer %s: name is used twice", is.Name)
		}
		if a.issuers[is.URL] != nil {
			return nil, fmt.Errorf("configuring oidc issuer %s: url %s is also issuer %s", is.Name, is.URL, a.issuers[is.URL].Name)
		}
		names[is.Name] = true
		a.issuers[is.URL] = is
	}
	return a, nil
}

func (a *Authenticator) newIssuer(ctx context.Context, cfg Issuer) (*issuer, error) {
	if !validName(cfg.Name) {
		return nil, errors.New("name must be non-empty letters, digits, '.', '_' or '-'")
	}
	if err := checkURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if cfg.JWKSURL != "" {
		if err := checkURL(cfg.JWKSURL); err != nil {
			return nil, fmt.Errorf("jwks url: %w", err)
		}
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("no audiences: set the aud the CI puts in its tokens, e.g. the gateway URL")
	}
	if slices.Contains(cfg.Audiences, "") {
		return nil, errors.New("empty audience")
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms()
	}
	for _, alg := range cfg.Algorithms {
		switch {
		case strings.HasPrefix(strings.ToUpper(alg), "HS"):
			return nil, fmt.Errorf("algorithm %q is symmetric: only the issuer's public keys may verify tokens", alg)
		case strings.EqualFold(alg, "none"):
			return nil, errors.New(`algorithm "none" accepts unsigned tokens`)
		case !isAsymmetric(alg):
			return nil, fmt.Errorf("unsupported algorithm %q (want one of %s)", alg, asymmetricAlgorithms)
		}
	}
	switch {
	case cfg.ClockSkew == 0:
		cfg.ClockSkew = DefaultClockSkew
	case cfg.ClockSkew < 0 || cfg.ClockSkew > MaxClockSkew:
		return nil, fmt.Errorf("clock skew %v is not within 0 to %v", cfg.ClockSkew, MaxClockSkew)
	}
	if cfg.NameClaim == "" {
		cfg.NameClaim = DefaultNameClaim
	}
	switch {
	case cfg.MaxTokenAge == 0:
		cfg.MaxTokenAge = DefaultMaxTokenAge
	case cfg.MaxTokenAge < 0:
		return nil, fmt.Errorf("max token age %v is negative", cfg.MaxTokenAge)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
	cfg.Audiences = slices.Clone(cfg.Audiences)
	cfg.Algorithms = slices.Clone(cfg.Algorithms)

	skew := cfg.ClockSkew
	is := &issuer{
		Issuer: cfg,
		config: &gooidc.Config{
			SupportedSigningAlgs: cfg.Algorithms,
			// go-oidc compares aud with a single client ID; the audiences
			// are checked in Authenticate instead.
			SkipClientIDCheck: true,
			// go-oidc refuses a token once exp is before Now: running its
			// clock skew behind grants the skew on exp. Its own nbf check
			// allows a fixed 5 minutes; the stricter one is in
			// Authenticate.
			Now: func() time.Time { return a.now().Add(-skew) },
		},
		base: gooidc.ClientContext(context.WithoutCancel(ctx), cfg.HTTPClient),
		now:  a.now,
	}
	if cfg.JWKSURL != "" {
		is.verifier = gooidc.NewVerifier(cfg.URL, newKeySet(cfg.JWKSURL, cfg.HTTPClient, cfg.Algorithms, a.now), is.config)
	}
	return is, nil
}

func validName(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}

// checkURL accepts https URLs, and http on loopback for tests and dev
// mode: keys fetched over plain http could be swapped on the way.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an https URL without query, fragment or user", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if h := u.Hostname(); h == "localhost" || net.ParseIP(h).IsLoopback() {
			return nil
		}
	}
	return fmt.Errorf("%q is not https", s)
}

// getVerifier returns the issuer's verifier, discovering it on first use.
func (is *issuer) getVerifier(now time.Time) (*gooidc.IDTokenVerifier, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.verifier != nil {
		return is.verifier, nil
	}
	if is.lastErr != nil && now.Sub(is.failedAt) < discoveryRetryInterval {
		return nil, is.lastErr
	}
	v, err := is.discover()
	if err != nil {
		is.lastErr, is.failedAt = fmt.Errorf("discovering oidc issuer %s: %w", is.Name, err), now
		return nil, is.lastErr
	}
	is.verifier, is.lastErr = v, nil
	return v, nil
}

func (is *issuer) discover() (*gooidc.IDTokenVerifier, error) {
	ctx, cancel := context.WithTimeout(is.base, discoveryTimeout)
	defer cancel()
	// NewProvider also checks that the document names this issuer.
	p, err := gooidc.NewProvider(ctx, is.URL)
	if err != nil {
		return nil, err
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return nil, err
	}
	if err := checkURL(doc.JWKSURI); err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	// The key set lives as long as the verifier: it caches the keys and
	// refetches them when a token names a key ID it does not know, which
	// is how issuer key rotation is picked up.
	return gooidc.NewVerifier(is.URL, newKeySet(doc.JWKSURI, is.HTTPClient, is.Algorithms, is.now), is.config), nil
}

// Reasons of authentication failures. They name the failed check and never
// quote the token.
const (
	reasonMalformed     = "malformed token"
	reasonTooLarge      = "token too large"
	reasonUnknownIssuer = "unknown token issuer"
	reasonAlgorithm     = "unsupported token algorithm"
	reasonSignature     = "bad token signature"
	reasonExpired       = "token expired"
	reasonNoExpiry      = "token has no expiry"
	reasonNotYetValid   = "token not yet valid"
	reasonNoIssuedAt    = "token has no iat claim, so its lifetime cannot be checked against max_token_age"
	reasonAudience      = "wrong token audience"
	reasonIssuer        = "wrong token issuer"
	reasonFailed        = "token verification failed"
)

func fail(reason string) error { return &auth.Error{Reason: reason} }

// maxQuoted bounds an unverified claim quoted back in a reason.
const maxQuoted = 200

// unknownIssuer names the issuers this gateway trusts, so that a job whose
// token comes from another GitLab or Jenkins URL sees which one is
// expected. Their URLs are in every token they mint: no secret.
func (a *Authenticator) unknownIssuer(iss string) error {
	if iss == "" {
		iss = "(none)"
	} else {
		if len(iss) > maxQuoted {
			iss = iss[:maxQuoted] + "..."
		}
		iss = strconv.Quote(iss)
	}
	urls := make([]string, 0, len(a.issuers))
	for u := range a.issuers {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	return fail(fmt.Sprintf("%s %s: this gateway accepts tokens of %s", reasonUnknownIssuer, iss, strings.Join(urls, ", ")))
}

// wrongAudience names the audiences the token's issuer must mint for (for
// GitLab, the aud of the job's id_tokens; for Jenkins, the credential's
// audience).
func (is *issuer) wrongAudience(got []string) error {
	have := "(none)"
	if len(got) > 0 {
		q := make([]string, len(got))
		for i, g := range got {
			q[i] = strconv.Quote(g)
		}
		have = strings.Join(q, ", ")
	}
	want := make([]string, len(is.Audiences))
	for i, w := range is.Audiences {
		want[i] = strconv.Quote(w)
	}
	return fail(fmt.Sprintf("%s %s: tokens of issuer %s must have aud %s", reasonAudience, have, is.URL, strings.Join(want, " or ")))
}

// Authenticate verifies the request's bearer JWT. It returns
// auth.ErrNoCredentials when there is no bearer or it is not shaped like a
// JWT, an *auth.Error when the token is invalid, and another error when
// the issuer's discovery document or keys cannot be fetched, which is no
// fault of the caller.
func (a *Authenticator) Authenticate(r *http.Request) (auth.Identity, error) {
	raw, ok := token.Bearer(r)
	if !ok || !token.IsJWT(raw) {
		return auth.Identity{}, auth.ErrNoCredentials
	}
	if len(raw) > maxTokenSize {
		return auth.Identity{}, fail(reasonTooLarge)
	}
	// The unverified header and iss only choose the issuer and reject
	// early; everything else comes from the verified payload.
	alg, iss, err := peek(raw)
	if err != nil {
		return auth.Identity{}, fail(reasonMalformed)
	}
	is := a.issuers[iss]
	if is == nil {
		return auth.Identity{}, a.unknownIssuer(iss)
	}
	if !slices.Contains(is.Algorithms, alg) {
		return auth.Identity{}, fail(reasonAlgorithm)
	}
	v, err := is.getVerifier(a.now())
	if err != nil {
		return auth.Identity{}, err
	}
	tok, err := v.Verify(r.Context(), raw)
	if err != nil {
		return auth.Identity{}, verifyError(is, err)
	}
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return auth.Identity{}, fail(reasonMalformed)
	}
	if !slices.ContainsFunc(tok.Audience, func(aud string) bool { return slices.Contains(is.Audiences, aud) }) {
		return auth.Identity{}, is.wrongAudience(tok.Audience)
	}
	if nbf, ok := claims["nbf"]; ok {
		t, err := numericDate(nbf)
		if err != nil {
			return auth.Identity{}, fail(reasonMalformed)
		}
		if t.After(a.now().Add(is.ClockSkew)) {
			return auth.Identity{}, fail(reasonNotYetValid)
		}
	}
	if err := is.checkLifetime(claims, tok.Expiry); err != nil {
		return auth.Identity{}, err
	}
	attrs := attributes(claims)
	name := attrs[is.NameClaim]
	if name == "" {
		return auth.Identity{}, fail(fmt.Sprintf("token has no %s claim", is.NameClaim))
	}
	return auth.Identity{Name: is.Name + ":" + name, Kind: auth.KindOIDC, Issuer: is.URL, Attributes: attrs}, nil
}

// checkLifetime refuses a token that was minted to live longer than
// MaxTokenAge, or whose lifetime is unknown (no iat).
func (is *issuer) checkLifetime(claims map[string]json.RawMessage, exp time.Time) error {
	raw, ok := claims["iat"]
	if !ok {
		return fail(reasonNoIssuedAt)
	}
	iat, err := numericDate(raw)
	if err != nil {
		return fail(reasonMalformed)
	}
	if life := exp.Sub(iat); life > is.MaxTokenAge {
		return fail(fmt.Sprintf("token lifetime %v (exp - iat) is longer than max_token_age %v of issuer %s",
			life.Round(time.Second), is.MaxTokenAge, is.Name))
	}
	return nil
}

// verifyError turns a go-oidc verification error into the check that
// failed. go-oidc types only the expiry error, so the others are told
// apart by their text; anything unrecognised is still a failure.
func verifyError(is *issuer, err error) error {
	var expired *gooidc.TokenExpiredError
	msg := err.Error()
	switch {
	case errors.As(err, &expired) && expired.Expiry.IsZero():
		return fail(reasonNoExpiry)
	case errors.As(err, &expired):
		// When, so that a CI job can tell a token that outlived a long
		// queue from a clock that is off.
		return fail(fmt.Sprintf("%s at %s, %s ago", reasonExpired, expired.Expiry.UTC().Format(time.RFC3339),
			is.now().Sub(expired.Expiry).Round(time.Second)))
	case strings.Contains(msg, "fetching keys"):
		// The issuer's JWKS is unreachable: not the caller's fault.
		return fmt.Errorf("verifying token of oidc issuer %s: %w", is.Name, err)
	case strings.Contains(msg, "failed to verify signature"):
		return fail(reasonSignature)
	case strings.Contains(msg, "signature algorithm"):
		return fail(reasonAlgorithm)
	case strings.Contains(msg, "nbf"):
		return fail(reasonNotYetValid)
	case strings.Contains(msg, "malformed jwt"), strings.Contains(msg, "unmarshal claims"):
		return fail(reasonMalformed)
	case strings.Contains(msg, "different provider"):
		return fail(reasonIssuer)
	}
	return fail(reasonFailed)
}

// peek returns the unverified alg and iss of a JWT-shaped token.
func peek(raw string) (alg, iss string, err error) {
	parts := strings.Split(raw, ".")
	var hdr struct {
		Alg string `json:"alg"`
	}
	var payload struct {
		Iss string `json:"iss"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return "", "", err
	}
	if err := decodeSegment(parts[1], &payload); err != nil {
		return "", "", err
	}
	return hdr.Alg, payload.Iss, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// numericDate parses a JWT NumericDate: seconds since the epoch, possibly
// fractional.
func numericDate(raw json.RawMessage) (time.Time, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return time.Time{}, err
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(int64(f * 1000)), nil
}

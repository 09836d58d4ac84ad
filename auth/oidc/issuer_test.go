package oidc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// signingKey is an issuer's key.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func rsaKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.RS256, priv: k}
}

func ecKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.ES256, priv: k}
}

// sign returns a compact JWS of claims signed with k.
func (k signingKey) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	return signJWS(t, jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, nil, claims)
}

func signJWS(t *testing.T, key jose.SigningKey, extraHeaders map[jose.HeaderKey]any, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range extraHeaders {
		opts = opts.WithHeader(k, v)
	}
	signer, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned returns a JWT with alg "none" and an empty signature.
func unsigned(t *testing.T, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

// testIssuer is a local OIDC issuer: a TLS server with a discovery
// document and a JWKS whose keys the test can rotate.
type testIssuer struct {
	srv      *httptest.Server
	url      string // the issuer, as in "iss"
	jwksPath string

	mu            sync.Mutex
	keys          []signingKey
	failDiscovery bool
	failJWKS      bool
	discoveries   int
	jwksFetches   int
}

// newTestIssuer serves an issuer at srv.URL+prefix whose keys are at
// jwksPath.
func newTestIssuer(t *testing.T, prefix, jwksPath string, keys ...signingKey) *testIssuer {
	t.Helper()
	ti := &testIssuer{jwksPath: jwksPath, keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.mu.Lock()
		defer ti.mu.Unlock()
		ti.discoveries++
		if ti.failDiscovery {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, map[string]any{
			"issuer":                                ti.url,
			"jwks_uri":                              ti.srv.URL + ti.jwksPath,
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
		})
	})
	mux.HandleFunc("GET "+jwksPath, func(w http.ResponseWriter, r *http.Request) {
		ti.mu.Lock()
		defer ti.mu.Unlock()
		ti.jwksFetches++
		if ti.failJWKS {
			http.Error(w, "oops", http.StatusInternalServerError)
			return
		}
		var set jose.JSONWebKeySet
		for _, k := range ti.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
		}
		writeJSON(w, set)
	})
	ti.srv = httptest.NewUnstartedServer(mux)
	ti.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // a test makes handshakes fail
	ti.srv.StartTLS()
	t.Cleanup(ti.srv.Close)
	ti.url = ti.srv.URL + prefix
	return ti
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (ti *testIssuer) setKeys(keys ...signingKey) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.keys = keys
}

func (ti *testIssuer) set(f func(ti *testIssuer)) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	f(ti)
}

func (ti *testIssuer) counts() (discoveries, jwksFetches int) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.discoveries, ti.jwksFetches
}

// config returns the Issuer configuration for ti.
func (ti *testIssuer) config(name string, audiences ...string) Issuer {
	return Issuer{Name: name, URL: ti.url, Audiences: audiences, HTTPClient: ti.srv.Client()}
}

package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Bounds on refetching an issuer's keys for unknown key IDs.
const (
	refreshBurst    = 3
	refreshInterval = 10 * time.Second
	maxJWKSBytes    = 1 << 20
)

// keySet verifies token signatures against an issuer's JWKS. go-oidc's
// RemoteKeySet refetches the keys after any failed verification, so every
// forged token would cost a request to the issuer. This one refetches
// only for a key ID it does not know, and at most refreshBurst times per
// refreshInterval, which still picks up key rotation at once.
type keySet struct {
	url    string
	client *http.Client
	algs   []jose.SignatureAlgorithm
	now    func() time.Time

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched bool
	budget  float64
	last    time.Time
}

func newKeySet(url string, client *http.Client, algs []string, now func() time.Time) *keySet {
	k := &keySet{url: url, client: client, now: now, budget: refreshBurst}
	for _, a := range algs {
		k.algs = append(k.algs, jose.SignatureAlgorithm(a))
	}
	return k
}

// VerifySignature implements go-oidc's KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("failed to verify signature: want exactly one signature")
	}
	keys, err := k.keysFor(ctx, jws.Signatures[0].Header.KeyID)
	if err != nil {
		return nil, err
	}
	for _, key := range keys {
		if payload, err := jws.Verify(key); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("failed to verify signature: no known key verifies it")
}

func (k *keySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.fetched || (kid != "" && !k.has(kid) && k.spend()) {
		if err := k.fetch(ctx); err != nil {
			return nil, err
		}
	}
	var out []jose.JSONWebKey
	for _, key := range k.keys {
		if kid == "" || key.KeyID == kid {
			out = append(out, key)
		}
	}
	return out, nil
}

func (k *keySet) has(kid string) bool {
	for _, key := range k.keys {
		if key.KeyID == kid {
			return true
		}
	}
	return false
}

// spend takes one refetch from a budget that refills over time.
func (k *keySet) spend() bool {
	now := k.now()
	k.budget = min(refreshBurst, k.budget+now.Sub(k.last).Seconds()/refreshInterval.Seconds())
	k.last = now
	if k.budget < 1 {
		return false
	}
	k.budget--
	return true
}

func (k *keySet) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return fmt.Errorf("fetching keys: %w", err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching keys: %s answered %s", k.url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return fmt.Errorf("fetching keys: decoding %s: %w", k.url, err)
	}
	var keys []jose.JSONWebKey
	for _, key := range set.Keys {
		// Only public signing keys: a symmetric key in a JWKS would let
		// HMAC tokens through.
		if key.IsPublic() && key.Use != "enc" {
			keys = append(keys, key)
		}
	}
	k.keys, k.fetched = keys, true
	return nil
}

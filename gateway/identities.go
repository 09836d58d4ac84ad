package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/mtls"
	"github.com/buildgw/buildgw/auth/netallow"
	"github.com/buildgw/buildgw/auth/oidc"
	"github.com/buildgw/buildgw/auth/token"
)

// authenticator builds the chain the API checks, in this order: client
// certificates, static tokens, OIDC JWTs. Each identity source is
// restricted to its allow_networks when the config names some.
func (c *Config) authenticator() (auth.Authenticator, error) {
	var chain []auth.Authenticator
	if len(c.MTLSIdentities) > 0 {
		var rules []mtls.Rule
		nets := map[string]auth.Networks{}
		for _, m := range c.MTLSIdentities {
			rules = append(rules, mtls.Rule{Name: m.Name, SubjectCN: m.SubjectCN, DNSNames: m.DNSNames, URIs: m.URIs, Attributes: m.Attributes})
			if err := addNetworks(nets, m.Name, m.AllowNetworks); err != nil {
				return nil, fmt.Errorf("mtls_identities[%s]: %w", m.Name, err)
			}
		}
		a, err := mtls.New(rules)
		if err != nil {
			return nil, fmt.Errorf("mtls_identities: %w", err)
		}
		chain = append(chain, auth.Restrict(a, func(id auth.Identity) auth.Networks { return nets[id.Name] }))
	}
	if len(c.Tokens) > 0 {
		var toks []token.Token
		nets := map[string]auth.Networks{}
		for _, t := range c.Tokens {
			toks = append(toks, token.Token{Name: t.Name, SHA256: t.SHA256, Attributes: t.Attributes})
			if err := addNetworks(nets, t.Name, t.AllowNetworks); err != nil {
				return nil, fmt.Errorf("tokens[%s]: %w", t.Name, err)
			}
		}
		a, err := token.New(toks)
		if err != nil {
			return nil, fmt.Errorf("tokens: %w", err)
		}
		chain = append(chain, auth.Restrict(a, func(id auth.Identity) auth.Networks { return nets[id.Name] }))
	}
	if len(c.OIDCIssuers) > 0 {
		var issuers []oidc.Issuer
		nets := map[string]auth.Networks{}
		for _, iss := range c.OIDCIssuers {
			cfg := oidc.Issuer{
				Name: iss.Name, URL: iss.URL, Audiences: iss.Audiences, Algorithms: iss.Algorithms,
				ClockSkew: time.Duration(iss.ClockSkew), NameClaim: iss.NameClaim, JWKSURL: iss.JWKSURL,
				MaxTokenAge: time.Duration(iss.MaxTokenAge),
			}
			if iss.CAFile != "" {
				hc, err := httpClientWithCA(iss.CAFile)
				if err != nil {
					return nil, fmt.Errorf("oidc_issuers[%s]: %w", iss.Name, err)
				}
				cfg.HTTPClient = hc
			}
			issuers = append(issuers, cfg)
			if err := addNetworks(nets, iss.URL, iss.AllowNetworks); err != nil {
				return nil, fmt.Errorf("oidc_issuers[%s]: %w", iss.Name, err)
			}
		}
		a, err := oidc.New(context.Background(), issuers)
		if err != nil {
			return nil, fmt.Errorf("oidc_issuers: %w", err)
		}
		chain = append(chain, auth.Restrict(a, func(id auth.Identity) auth.Networks { return nets[id.Issuer] }))
	}
	return auth.Chain(chain...), nil
}

// identities returns where each identity may be used from (nil:
// anywhere), as authenticator restricts it, and whether it is configured
// at all (a token or mTLS identity by name, an OIDC identity by issuer),
// so that a build's read token is held to its owner's allow_networks and
// ends when its owner is removed.
func (c *Config) identities() (func(auth.Identity) (auth.Networks, bool), error) {
	nets := map[auth.Kind]map[string]auth.Networks{auth.KindMTLS: {}, auth.KindToken: {}, auth.KindOIDC: {}}
	known := map[auth.Kind]map[string]bool{auth.KindMTLS: {}, auth.KindToken: {}, auth.KindOIDC: {}}
	for _, m := range c.MTLSIdentities {
		known[auth.KindMTLS][m.Name] = true
		if err := addNetworks(nets[auth.KindMTLS], m.Name, m.AllowNetworks); err != nil {
			return nil, fmt.Errorf("mtls_identities[%s]: %w", m.Name, err)
		}
	}
	for _, t := range c.Tokens {
		known[auth.KindToken][t.Name] = true
		if err := addNetworks(nets[auth.KindToken], t.Name, t.AllowNetworks); err != nil {
			return nil, fmt.Errorf("tokens[%s]: %w", t.Name, err)
		}
	}
	for _, iss := range c.OIDCIssuers {
		known[auth.KindOIDC][iss.URL] = true
		if err := addNetworks(nets[auth.KindOIDC], iss.URL, iss.AllowNetworks); err != nil {
			return nil, fmt.Errorf("oidc_issuers[%s]: %w", iss.Name, err)
		}
	}
	return func(id auth.Identity) (auth.Networks, bool) {
		key := id.Name
		if id.Kind == auth.KindOIDC {
			key = id.Issuer
		}
		return nets[id.Kind][key], known[id.Kind][key]
	}, nil
}

func addNetworks(m map[string]auth.Networks, key string, cidrs []string) error {
	if len(cidrs) == 0 {
		return nil
	}
	l, err := netallow.Parse(cidrs)
	if err != nil {
		return fmt.Errorf("allow_networks: %w", err)
	}
	m[key] = l
	return nil
}

func httpClientWithCA(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t, Timeout: 10 * time.Second}, nil
}

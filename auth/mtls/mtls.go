// Package mtls authenticates client certificates. The TLS stack verifies
// the chain against the configured client CAs; this package maps a
// verified certificate to an identity by configured rules, so trusting a
// CA does not by itself grant any identity.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/buildgw/buildgw/auth"
)

// Rule maps the certificates it matches to an identity. A certificate
// matches when its subject CN equals SubjectCN (if set) and it carries
// every listed DNS and URI SAN. A rule must set at least one of them.
type Rule struct {
	// Name is the identity's name. Several rules may share one, e.g. for
	// a certificate rotation that changes the CN.
	Name      string
	SubjectCN string
	// DNSNames are compared case-insensitively, URIs exactly.
	DNSNames []string
	URIs     []string
	// Attributes are what policy matches on. The keys that Authenticate
	// fills in from the certificate are reserved.
	Attributes map[string]string
}

// Attribute keys filled in from the certificate.
const (
	AttrSubjectCN = "subject_cn"
	AttrDNSSANs   = "dns_sans" // comma-separated
	AttrURISANs   = "uri_sans" // comma-separated
)

// Authenticator maps verified client certificates to identities.
type Authenticator struct {
	rules []Rule
}

var _ auth.Authenticator = (*Authenticator)(nil)

// New returns an Authenticator that tries rules in order.
func New(rules []Rule) (*Authenticator, error) {
	a := &Authenticator{rules: make([]Rule, 0, len(rules))}
	for i, r := range rules {
		if r.Name == "" {
			return nil, fmt.Errorf("mtls rule #%d: name is empty", i+1)
		}
		// A rule without criteria would give its identity to every
		// certificate the CAs ever issued.
		if r.SubjectCN == "" && len(r.DNSNames) == 0 && len(r.URIs) == 0 {
			return nil, fmt.Errorf("mtls rule %q: set subject_cn, dns_names or uris", r.Name)
		}
		if slices.Contains(r.DNSNames, "") || slices.Contains(r.URIs, "") {
			return nil, fmt.Errorf("mtls rule %q: empty SAN", r.Name)
		}
		for _, k := range []string{AttrSubjectCN, AttrDNSSANs, AttrURISANs} {
			if _, ok := r.Attributes[k]; ok {
				return nil, fmt.Errorf("mtls rule %q: attribute %q is reserved: it is taken from the certificate", r.Name, k)
			}
		}
		r.DNSNames = slices.Clone(r.DNSNames)
		r.URIs = slices.Clone(r.URIs)
		r.Attributes = maps.Clone(r.Attributes)
		a.rules = append(a.rules, r)
	}
	return a, nil
}

// Authenticate returns the identity of the first rule that the request's
// verified client certificate matches. A request without a verified
// certificate (no TLS, no certificate, or a certificate the TLS config
// did not verify) carries no credentials of this kind.
func (a *Authenticator) Authenticate(r *http.Request) (auth.Identity, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return auth.Identity{}, auth.ErrNoCredentials
	}
	cert := r.TLS.VerifiedChains[0][0]
	uris := make([]string, len(cert.URIs))
	for i, u := range cert.URIs {
		uris[i] = u.String()
	}
	for _, rule := range a.rules {
		if !matches(rule, cert, uris) {
			continue
		}
		attrs := maps.Clone(rule.Attributes)
		if attrs == nil {
			attrs = make(map[string]string, 3)
		}
		attrs[AttrSubjectCN] = cert.Subject.CommonName
		attrs[AttrDNSSANs] = strings.Join(cert.DNSNames, ",")
		attrs[AttrURISANs] = strings.Join(uris, ",")
		return auth.Identity{Name: rule.Name, Kind: auth.KindMTLS, Attributes: attrs}, nil
	}
	return auth.Identity{}, &auth.Error{Reason: "client certificate matches no identity"}
}

func matches(rule Rule, cert *x509.Certificate, uris []string) bool {
	if rule.SubjectCN != "" && rule.SubjectCN != cert.Subject.CommonName {
		return false
	}
	for _, want := range rule.DNSNames {
		if !slices.ContainsFunc(cert.DNSNames, func(got string) bool { return strings.EqualFold(got, want) }) {
			return false
		}
	}
	for _, want := range rule.URIs {
		if !slices.Contains(uris, want) {
			return false
		}
	}
	return true
}

// ServerTLSConfig returns the listener's TLS config: the server
// certificate from certFile and keyFile, TLS 1.2 or later, and, when
// clientCAFile is set, client certificates verified against the CAs in
// it. Client certificates are optional (tls.VerifyClientCertIfGiven) so
// that callers with bearer tokens need none, but one that is presented
// must verify, or the handshake fails.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if clientCAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("loading client CAs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("loading client CAs: no PEM certificates in %s", clientCAFile)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	return cfg, nil
}

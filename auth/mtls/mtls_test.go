package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/authtest"
	"github.com/buildgw/buildgw/internal/testenv"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// issue returns a leaf certificate signed by ca; tmpl holds the subject,
// SANs and usages.
func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key := newKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func clientCert(ca *testCA, t *testing.T, cn string, dns []string, uris ...string) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dns,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	return ca.issue(t, tmpl)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// requestWithCert returns a request as the server sees it after verifying
// cert, or with no TLS at all when cert is nil.
func requestWithCert(cert *x509.Certificate) *http.Request {
	r := httptest.NewRequest("GET", "/v1/builds", nil)
	if cert == nil {
		r.TLS = nil
		return r
	}
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
	return r
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		rules   []Rule
		wantErr string
	}{
		{"none", nil, ""},
		{"cn only", []Rule{{Name: "a", SubjectCN: "a"}}, ""},
		{"dns only", []Rule{{Name: "a", DNSNames: []string{"a.example"}}}, ""},
		{"uri only", []Rule{{Name: "a", URIs: []string{"spiffe://x/y"}}}, ""},
		{"shared name", []Rule{{Name: "a", SubjectCN: "a1"}, {Name: "a", SubjectCN: "a2"}}, ""},
		{"empty name", []Rule{{SubjectCN: "a"}}, "mtls rule #1: name is empty"},
		{"no criteria", []Rule{{Name: "any", Attributes: map[string]string{"x": "y"}}}, `mtls rule "any": set subject_cn, dns_names or uris`},
		{"empty dns", []Rule{{Name: "a", DNSNames: []string{""}}}, `mtls rule "a": empty SAN`},
		{"reserved attribute", []Rule{{Name: "a", SubjectCN: "a", Attributes: map[string]string{"subject_cn": "x"}}}, `attribute "subject_cn" is reserved`},
	}
	for _, tt := range tests {
		_, err := New(tt.rules)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: New(%+v) = %v, want error containing %q", tt.name, tt.rules, err, tt.wantErr)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	ca := newCA(t, "test CA")
	a, err := New([]Rule{
		{Name: "laptop-alice", SubjectCN: "alice", Attributes: map[string]string{"team": "web"}},
		{Name: "jenkins", SubjectCN: "jenkins", DNSNames: []string{"jenkins.example.com", "agents.example.com"}},
		{Name: "spiffe-ci", URIs: []string{"spiffe://example.com/ci"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	noMatch := &auth.Error{Reason: "client certificate matches no identity"}
	tests := []struct {
		name    string
		cert    tls.Certificate // zero means no TLS
		want    auth.Identity
		wantErr error
	}{
		{"no tls", tls.Certificate{}, auth.Identity{}, auth.ErrNoCredentials},
		{"cn rule", clientCert(ca, t, "alice", nil),
			auth.Identity{Name: "laptop-alice", Kind: auth.KindMTLS, Attributes: map[string]string{"team": "web", "subject_cn": "alice", "dns_sans": "", "uri_sans": ""}}, nil},
		{"cn and all sans, case-insensitive dns, extra san", clientCert(ca, t, "jenkins", []string{"AGENTS.example.com", "jenkins.example.com", "other.example.com"}),
			auth.Identity{Name: "jenkins", Kind: auth.KindMTLS, Attributes: map[string]string{"subject_cn": "jenkins", "dns_sans": "AGENTS.example.com,jenkins.example.com,other.example.com", "uri_sans": ""}}, nil},
		{"cn but a san missing", clientCert(ca, t, "jenkins", []string{"jenkins.example.com"}), auth.Identity{}, noMatch},
		{"sans but wrong cn", clientCert(ca, t, "mallory", []string{"jenkins.example.com", "agents.example.com"}), auth.Identity{}, noMatch},
		{"cn differs in case", clientCert(ca, t, "Alice", nil), auth.Identity{}, noMatch},
		{"uri rule", clientCert(ca, t, "", nil, "spiffe://example.com/ci"),
			auth.Identity{Name: "spiffe-ci", Kind: auth.KindMTLS, Attributes: map[string]string{"subject_cn": "", "dns_sans": "", "uri_sans": "spiffe://example.com/ci"}}, nil},
		{"uri prefix only", clientCert(ca, t, "", nil, "spiffe://example.com/ci/evil"), auth.Identity{}, noMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Authenticate(requestWithCert(tt.cert.Leaf))
			if !authtest.SameError(err, tt.wantErr) {
				t.Fatalf("Authenticate(%v) error = %v, want %v", subject(tt.cert), err, tt.wantErr)
			}
			if !authtest.SameIdentity(got, tt.want) {
				t.Errorf("Authenticate(%v) = %+v, want %+v", subject(tt.cert), got, tt.want)
			}
		})
	}
}

func TestAuthenticateUnverifiedCertificate(t *testing.T) {
	a, err := New([]Rule{{Name: "alice", SubjectCN: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	cert := clientCert(newCA(t, "ca"), t, "alice", nil)
	// As with tls.RequestClientCert: presented but never verified.
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	if _, err := a.Authenticate(r); !errors.Is(err, auth.ErrNoCredentials) {
		t.Errorf("Authenticate(unverified alice) error = %v, want %v", err, auth.ErrNoCredentials)
	}
}

// TestOverTLS runs the authenticator behind a real TLS listener configured
// by ServerTLSConfig.
func TestOverTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA := newCA(t, "server CA")
	clientCA := newCA(t, "client CA")
	otherCA := newCA(t, "untrusted CA")

	srvCert := serverCA.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "buildgw"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvCert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writePEM(t, dir, "server.crt", "CERTIFICATE", srvCert.Certificate[0])
	keyFile := writePEM(t, dir, "server.key", "PRIVATE KEY", keyDER)
	caFile := writePEM(t, dir, "clients.crt", "CERTIFICATE", clientCA.cert.Raw)

	cfg, err := ServerTLSConfig(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New([]Rule{{Name: "ci-bot", SubjectCN: "ci-bot"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := a.Authenticate(r)
		switch {
		case errors.Is(err, auth.ErrNoCredentials):
			fmt.Fprint(w, "no credentials")
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		default:
			fmt.Fprintf(w, "%s %s", id.Kind, id.Name)
		}
	}))
	srv.TLS = cfg
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected
	srv.StartTLS()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	tests := []struct {
		name     string
		certs    []tls.Certificate
		want     string // response body; "" means the request must fail
		wantCode int
	}{
		{"trusted client certificate", []tls.Certificate{clientCert(clientCA, t, "ci-bot", nil)}, "mtls ci-bot", 200},
		{"trusted certificate of nobody", []tls.Certificate{clientCert(clientCA, t, "stranger", nil)}, "client certificate matches no identity\n", 401},
		{"untrusted client certificate", []tls.Certificate{clientCert(otherCA, t, "ci-bot", nil)}, "", 0},
		{"no client certificate", nil, "no credentials", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := &tls.Config{RootCAs: roots}
			if len(tt.certs) > 0 {
				// Always present the certificate, as curl would: with
				// Config.Certificates Go's client silently sends none
				// when the server's acceptable CAs do not list its issuer.
				tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tt.certs[0], nil }
			}
			c := &http.Client{Timeout: testenv.Scale(10 * time.Second), Transport: &http.Transport{TLSClientConfig: tc}}
			defer c.CloseIdleConnections()
			resp, err := c.Get(srv.URL)
			if tt.want == "" {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET with %s = %s, want a failed handshake", tt.name, resp.Status)
				}
				if !strings.Contains(err.Error(), "tls:") {
					t.Errorf("GET with %s: %v, want a TLS error", tt.name, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET with %s: %v", tt.name, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if string(body) != tt.want || resp.StatusCode != tt.wantCode {
				t.Errorf("GET with %s = %d %q, want %d %q", tt.name, resp.StatusCode, body, tt.wantCode, tt.want)
			}
		})
	}
}

func TestServerTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	leaf := ca.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "srv"}, DNSNames: []string{"localhost"}})
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writePEM(t, dir, "s.crt", "CERTIFICATE", leaf.Certificate[0])
	keyFile := writePEM(t, dir, "s.key", "PRIVATE KEY", keyDER)
	caFile := writePEM(t, dir, "ca.crt", "CERTIFICATE", ca.cert.Raw)
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name           string
		cert, key, ca  string
		wantErr        string
		wantClientAuth tls.ClientAuthType
	}{
		{"server only", certFile, keyFile, "", "", tls.NoClientCert},
		{"with client CAs", certFile, keyFile, caFile, "", tls.VerifyClientCertIfGiven},
		{"missing cert", missing, keyFile, "", "loading server certificate", 0},
		{"key is not a key", certFile, certFile, "", "loading server certificate", 0},
		{"missing CA file", certFile, keyFile, missing, "loading client CAs", 0},
		{"CA file without PEM", certFile, keyFile, junk, "loading client CAs: no PEM certificates in " + junk, 0},
	}
	for _, tt := range tests {
		cfg, err := ServerTLSConfig(tt.cert, tt.key, tt.ca)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: ServerTLSConfig(%q, %q, %q) = %v, want error containing %q", tt.name, tt.cert, tt.key, tt.ca, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: ServerTLSConfig(%q, %q, %q) = %v, want no error", tt.name, tt.cert, tt.key, tt.ca, err)
			continue
		}
		if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tt.wantClientAuth || len(cfg.Certificates) != 1 || (tt.ca != "") != (cfg.ClientCAs != nil) {
			t.Errorf("%s: ServerTLSConfig = {MinVersion: %x, ClientAuth: %v, ClientCAs set: %v}, want {%x, %v, %v}",
				tt.name, cfg.MinVersion, cfg.ClientAuth, cfg.ClientCAs != nil, tls.VersionTLS12, tt.wantClientAuth, tt.ca != "")
		}
	}
}

func subject(c tls.Certificate) string {
	if c.Leaf == nil {
		return "no certificate"
	}
	return fmt.Sprintf("CN=%q DNS=%q URIs=%v", c.Leaf.Subject.CommonName, c.Leaf.DNSNames, c.Leaf.URIs)
}

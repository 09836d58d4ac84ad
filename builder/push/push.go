// Package push sends built images to registries with the gateway's own
// credentials, which never enter a build sandbox.
package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/builder"
)

// Registry is what the gateway knows about one registry host.
type Registry struct {
	// Username and Password authenticate pushes. Empty: anonymous.
	Username string
	Password string
	// CAFile is a PEM bundle trusted for this registry in addition to the
	// system roots.
	CAFile string
	// Insecure allows plain HTTP. Loopback registries are always reached
	// over plain HTTP unless they answer TLS, as go-containerregistry does.
	Insecure bool
}

// Pusher pushes images with per-registry credentials and trust.
type Pusher struct {
	regs       map[string]Registry
	transports map[string]http.RoundTripper
	base       http.RoundTripper
}

var _ builder.Pusher = (*Pusher)(nil)

// New returns a Pusher for the given registries, keyed by host[:port].
// A registry not listed is pushed to anonymously over HTTPS.
func New(regs map[string]Registry) (*Pusher, error) {
	p := &Pusher{regs: regs, transports: map[string]http.RoundTripper{}, base: remote.DefaultTransport}
	for host, r := range regs {
		if r.CAFile == "" {
			continue
		}
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file of registry %s: %w", host, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file of registry %s holds no PEM certificate", host)
		}
		t := remote.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		p.transports[host] = t
	}
	return p, nil
}

// Push writes img to dst, with its manifest unchanged, so the digest the
// registry stores is the image's own digest.
func (p *Pusher) Push(ctx context.Context, img v1.Image, dst name.Tag) error {
	host := dst.RegistryStr()
	r := p.regs[host]
	if r.Insecure {
		// Re-parse so go-containerregistry picks plain HTTP for this host.
		t, err := name.NewTag(dst.String(), name.Insecure)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", dst, err)
		}
		dst = t
	}
	auth := authn.Anonymous
	if r.Username != "" || r.Password != "" {
		auth = &authn.Basic{Username: r.Username, Password: r.Password}
	}
	tr := p.base
	if t, ok := p.transports[host]; ok {
		tr = t
	}
	if err := remote.Write(dst, img, remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(tr)); err != nil {
		return fmt.Errorf("pushing %s: %w", dst, err)
	}
	return nil
}

// Package push sends built images to registries with the gateway's own
// credentials, which never enter a build sandbox.
package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/buildgw/buildgw/jobs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
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
	attempts   int // 0: as many as retryFor allows
	retryFor   time.Duration
	backoff    time.Duration
	maxBackoff time.Duration
	timeout    time.Duration
}

// Option configures a Pusher.
type Option func(*Pusher)

// Defaults of the options below.
const (
	DefaultRetryFor       = 5 * time.Minute
	DefaultRequestTimeout = time.Minute
)

// WithRetry makes a push that fails on a 5xx answer or a connection
// error try again (a request that stalls for WithRequestTimeout is not), at most attempts times in all (0: no bound
// but WithRetryFor), waiting backoff before the first retry and twice as
// long before each next one, up to WithMaxBackoff. Default: no bound on
// attempts, from 1s.
func WithRetry(attempts int, backoff time.Duration) Option {
	return func(p *Pusher) { p.attempts, p.backoff = max(attempts, 0), backoff }
}

// WithRetryFor bounds the time a push keeps retrying: no retry starts
// later than d after the first attempt began. Default DefaultRetryFor, so
// that a registry restart or a short outage does not throw a finished
// build away; 0: no retries.
func WithRetryFor(d time.Duration) Option { return func(p *Pusher) { p.retryFor = d } }

// WithMaxBackoff bounds the wait between two attempts. Default 30s.
func WithMaxBackoff(d time.Duration) Option { return func(p *Pusher) { p.maxBackoff = d } }

// WithRequestTimeout bounds how long one request to a registry may go
// without progress: until its answer begins, and between two pieces of a
// request or answer body, so that a registry that accepts connections but
// never answers, or stops reading an upload, fails the attempt instead of
// holding the build until its timeout. Such a stall ends the push
// without a retry: the registry is hung, not restarting. Default DefaultRequestTimeout; 0:
// no bound.
func WithRequestTimeout(d time.Duration) Option { return func(p *Pusher) { p.timeout = d } }

var _ jobs.Pusher = (*Pusher)(nil)

// New returns a Pusher for the given registries, keyed by host[:port].
// A registry not listed is pushed to anonymously over HTTPS.
func New(regs map[string]Registry, opts ...Option) (*Pusher, error) {
	p := &Pusher{regs: regs, transports: map[string]http.RoundTripper{}, base: remote.DefaultTransport,
		retryFor: DefaultRetryFor, backoff: time.Second, maxBackoff: 30 * time.Second, timeout: DefaultRequestTimeout}
	for _, o := range opts {
		o(p)
	}
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
// registry stores is the image's own digest. Each retry is told to logf
// (if not nil) with its reason and wait.
func (p *Pusher) Push(ctx context.Context, img v1.Image, dst name.Tag, logf func(format string, args ...any)) error {
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
	if p.timeout > 0 {
		tr = &stallTransport{next: tr, idle: p.timeout}
	}
	// The retries are ours alone, so that their number and waits are
	// what the configuration says: go-containerregistry's own are off.
	wopts := []remote.Option{
		remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(tr),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}), remote.WithRetryStatusCodes(),
	}
	giveUp := time.Now().Add(p.retryFor)
	wait := p.backoff
	for attempt := 1; ; attempt++ {
		err := remote.Write(dst, img, wopts...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		// Equal jitter: pushes that failed together do not all come back
		// at the same moment.
		d := wait/2 + rand.N(wait/2+1)
		if !retryable(err) || stalled(err) || (p.attempts > 0 && attempt >= p.attempts) || time.Now().Add(d).After(giveUp) {
			return describe(host, attempt, err)
		}
		if logf != nil {
			logf("push to %s failed (%s), retrying in %s", host, reason(err), d.Round(100*time.Millisecond))
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
		wait = min(wait*2, p.maxBackoff)
	}
}

// reason is what went wrong in a few words, for the build log.
func reason(err error) string {
	var te *transport.Error
	if errors.As(err, &te) {
		return fmt.Sprintf("%d %s", te.StatusCode, http.StatusText(te.StatusCode))
	}
	var se *StallError
	if errors.As(err, &se) {
		return se.Error()
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// retryable reports whether a failed push may succeed if tried again: the
// registry failed (5xx, 408, 429), could not be reached, or lost track of
// a blob. The last happens when two pushes of images that share a layer
// (two builds on one base) link it into a repository at the same time:
// Distribution's filesystem storage rewrites the link in place, and a
// manifest checked in between finds the layer unknown. A new attempt
// checks every blob again and uploads whatever is missing.
func retryable(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestBlobUnknownErrorCode, transport.BlobUnknownErrorCode, transport.BlobUploadUnknownErrorCode:
				return true
			}
		}
		return te.StatusCode >= 500 || te.StatusCode == http.StatusRequestTimeout || te.StatusCode == http.StatusTooManyRequests
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// stalled reports whether a request went a whole request timeout without
// progress. That registry accepts connections but is hung, and is not
// retried: a registry that restarts refuses connections or answers 502 or
// 503, which are, while another attempt at a hung one would only hold the
// build for another request timeout.
func stalled(err error) bool {
	var se *StallError
	return errors.As(err, &se)
}

// describe names the registry and what it answered, so that a failed
// build says whose fault it was.
func describe(host string, attempts int, err error) error {
	tries := "after 1 attempt"
	if attempts > 1 {
		tries = fmt.Sprintf("after %d attempts", attempts)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return fmt.Errorf("registry %s answered %d %s %s: %w", host, te.StatusCode, http.StatusText(te.StatusCode), tries, err)
	}
	var se *StallError
	if errors.As(err, &se) {
		return fmt.Errorf("registry %s stopped answering %s: %w", host, tries, err)
	}
	if retryable(err) {
		return fmt.Errorf("registry %s unreachable %s: %w", host, tries, err)
	}
	return fmt.Errorf("registry %s: %w", host, err)
}

package basestore

import (
	"fmt"
	"net/http"
	"os"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Option configures a Store.
type Option func(*options) error

type options struct {
	maxBytes     int64
	maxBlobBytes int64 // 0: maxBytes
	remote       func(name.Registry) []remote.Option
	transport    func(name.Registry) http.RoundTripper
	platform     v1.Platform
	link         bool
}

// DefaultMaxBytes bounds a store that WithMaxBytes does not: 10 GiB.
const DefaultMaxBytes = 10 << 30

// MaxMetadataBytes bounds each manifest and config: both are read whole
// into memory, a config at submission inside the request. Docker Hub
// refuses manifests over 4 MiB.
const MaxMetadataBytes = 8 << 20

func makeOptions(opts ...Option) (options, error) {
	o := options{
		maxBytes: DefaultMaxBytes,
		remote:   func(name.Registry) []remote.Option { return nil },
		// ggcr's own default.
		transport: func(name.Registry) http.RoundTripper { return remote.DefaultTransport },
		platform:  v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		// Hard links are safe only where the sandbox cannot write to the
		// store's files through them: a root gateway's files belong to no
		// user of a sandbox's namespace. Any other gateway's sandboxes run
		// as its own user, so they get copies.
		link: os.Geteuid() == 0,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	if o.maxBlobBytes == 0 || o.maxBlobBytes > o.maxBytes {
		o.maxBlobBytes = o.maxBytes
	}
	return o, nil
}

// WithMaxBytes bounds the store's size. When a download takes it beyond,
// the least recently used blobs that no build is about to use are
// removed. It also bounds the blobs of one build's images together
// (of one image for Fetch), stored or not: they stay leased until the
// build has them, so a build that needs more could not be kept within the
// bound, and is refused before any layer is downloaded. Default
// DefaultMaxBytes.
func WithMaxBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("base image store: size bound must be positive, got %d", n)
		}
		o.maxBytes = n
		return nil
	}
}

// WithMaxBlobBytes bounds each layer: a manifest that gives a layer a
// larger size is refused before the layer is downloaded. Default, and at
// most, the store's bound (WithMaxBytes).
func WithMaxBlobBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("base image store: blob size bound must be positive, got %d", n)
		}
		o.maxBlobBytes = n
		return nil
	}
}

// WithRemoteOptions gives the options (credentials) with which images are
// fetched from a registry. A transport among them would be replaced by the
// store's, which bounds what it reads: give it with WithTransport. Default:
// anonymous.
func WithRemoteOptions(f func(name.Registry) []remote.Option) Option {
	return func(o *options) error { o.remote = f; return nil }
}

// WithTransport gives the transport over which images are fetched from a
// registry (one that trusts its CA, say); the store reads the answers to
// its manifest requests through it no further than MaxMetadataBytes.
// f may return nil for the default. Default: ggcr's remote.DefaultTransport.
func WithTransport(f func(name.Registry) http.RoundTripper) Option {
	return func(o *options) error {
		o.transport = func(r name.Registry) http.RoundTripper {
			if t := f(r); t != nil {
				return t
			}
			return remote.DefaultTransport
		}
		return nil
	}
}

// WithCopies makes workspaces get copies of blobs instead of hard links.
// Default: hard links when the gateway is root, copies otherwise.
func WithCopies() Option {
	return func(o *options) error { o.link = false; return nil }
}

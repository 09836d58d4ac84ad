package kaniko

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/cgroup"
	"github.com/buildgw/buildgw/runners/egress"
)

// Option configures a Runner.
type Option func(*options) error

type options struct {
	executor string
	unshare  string
	user     string
	caCerts  string
	flags    []string
	nice     int
	limits   cgroup.Limits
	cgroups  string // cgroup mount
	network  netmode.Mode
	refuse   []string // egress.ParseRefuse's
	slirp    string
	nsenter  string
	iptables string
	cacheDir string
	cacheMax int64
	// workspaceMax is the bound on a build's workspace; 0: unknown.
	workspaceMax int64
	// resultDir and resultMax configure the whole-build result cache.
	resultDir string
	resultMax int64
	// subUID and subGID are the files of subordinate id ranges, as
	// newuidmap and newgidmap read them (tests point elsewhere).
	subUID, subGID string
}

// DefaultLayerCacheBytes bounds all tenants' layer caches together when
// WithLayerCacheMaxBytes is not given.
const DefaultLayerCacheBytes = 20 << 30

// DefaultResultCacheBytes bounds the result cache when WithResultCache is
// given no bound: room for a few hundred typical application images.
const DefaultResultCacheBytes = 10 << 30

// DefaultUser is the sandbox user a root gateway switches to.
const DefaultUser = "buildgw-sandbox"

// defaultFlags are kaniko flags chosen by measurement (bench/overhead
// -kaniko-flags; figures in bench/README.md): without compressed caching
// the executor's peak memory halves at no cost in time, and the image is
// the same. No flag set was measurably faster.
var defaultFlags = []string{"--compressed-caching=false"}

func makeOptions(opts ...Option) (options, error) {
	o := options{
		unshare:  "unshare",
		user:     DefaultUser,
		subUID:   "/etc/subuid",
		subGID:   "/etc/subgid",
		caCerts:  "/etc/ssl/certs/ca-certificates.crt",
		flags:    append([]string(nil), defaultFlags...),
		nice:     19,
		cgroups:  "/sys/fs/cgroup",
		network:  netmode.None,
		cacheMax: DefaultLayerCacheBytes,
		slirp:    "slirp4netns",
		nsenter:  "nsenter",
		iptables: "iptables",
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	if err := o.network.Check(); err != nil {
		return o, fmt.Errorf("kaniko runner: %w", err)
	}
	if o.executor == "" {
		return o, errors.New("kaniko runner: no executor configured")
	}
	abs, err := filepath.Abs(o.executor)
	if err != nil {
		return o, err
	}
	o.executor = abs
	if _, err := os.Stat(o.executor); err != nil {
		return o, errors.New("kaniko runner: executor " + o.executor + " not found (build it with `go build ./cmd/kaniko-executor`)")
	}
	return o, nil
}

// WithNice sets the scheduling niceness of every sandbox process, so
// that builds, which can use every core, yield to the gateway's API: CI
// pollers keep their latency while builds run (bench/lifecycle; figures
// in bench/README.md). Default 19, the lowest; 0 keeps the gateway's own
// priority.
func WithNice(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 19 {
			return errors.New("kaniko runner: niceness must be between 0 and 19")
		}
		o.nice = n
		return nil
	}
}

// WithLimits bounds each sandbox's memory (bytes, swap included) and
// processes (pids, threads included) with a cgroup of its own, on hosts
// with cgroup v1 or v2. Zero fields are unbounded. Default: unbounded.
func WithLimits(memoryBytes, pids int64) Option {
	return func(o *options) error {
		if memoryBytes < 0 || pids < 0 {
			return errors.New("kaniko runner: limits must not be negative")
		}
		o.limits = cgroup.Limits{MemoryBytes: memoryBytes, Pids: pids}
		return nil
	}
}

// WithExecutor sets the path of the kaniko executor built from
// cmd/kaniko-executor. Required.
func WithExecutor(path string) Option {
	return func(o *options) error { o.executor = path; return nil }
}

// WithUnshare sets the unshare binary. Default "unshare" from PATH.
func WithUnshare(path string) Option {
	return func(o *options) error { o.unshare = path; return nil }
}

// WithUser sets the unprivileged user a root gateway runs sandboxes as.
// It needs ranges in /etc/subuid and /etc/subgid. Default DefaultUser.
// Ignored when the gateway is not root: sandboxes then run as the
// gateway's own user.
func WithUser(name string) Option {
	return func(o *options) error { o.user = name; return nil }
}

// WithFlags appends extra kaniko flags, for tuning. Default none.
func WithFlags(flags ...string) Option {
	return func(o *options) error { o.flags = append(o.flags, flags...); return nil }
}

// WithNetwork sets the network of builds whose request names none:
// netmode.None (loopback only) or netmode.Egress (outbound
// through slirp4netns; the host's loopback and own addresses and
// 169.254.0.0/16 refused). Default none: base images come from the
// gateway, so a build needs no network unless its RUN steps do.
func WithNetwork(mode netmode.Mode) Option {
	return func(o *options) error { o.network = mode; return nil }
}

// WithEgressRefuse adds destinations (IPv4 addresses or CIDR networks)
// that RUN steps in egress mode never reach, on top of the gateway's host
// and 169.254.0.0/16: the operator's internal networks, say.
func WithEgressRefuse(dsts ...string) Option {
	return func(o *options) error {
		r, err := egress.ParseRefuse(dsts)
		if err != nil {
			return fmt.Errorf("kaniko runner: %w", err)
		}
		o.refuse = r
		return nil
	}
}

// WithLayerCache enables kaniko's layer cache, kept under dir with one
// directory per tenant (builder.Request.Tenant): a build reads only its
// own tenant's cache, read-only, and the runner adds what the build wrote
// to it, checked, once the build succeeded (see layerCaches), so a hostile
// build can at worst add entries to its own tenant's cache, never alter
// one. Default: no layer cache.
func WithLayerCache(dir string) Option {
	return func(o *options) error { o.cacheDir = dir; return nil }
}

// WithLayerCacheMaxBytes bounds the layer caches of all tenants together:
// after a build, the oldest cached layers of tenants with no build running
// are removed until the rest fit. Default (and 0) DefaultLayerCacheBytes.
func WithLayerCacheMaxBytes(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return errors.New("kaniko runner: layer cache bound must not be negative")
		}
		if n == 0 {
			n = DefaultLayerCacheBytes
		}
		o.cacheMax = n
		return nil
	}
}

// WithWorkspaceLimit tells the runner the bound the gateway puts on one
// build's workspace (jobs.WithWorkspaceLimit), which holds the build's
// layer cache directory: what a build may add to its tenant's shared
// cache is then at most this much, as well as at most the caches' bound.
// Default 0: no bound known, the caches' bound alone.
func WithWorkspaceLimit(maxBytes int64) Option {
	return func(o *options) error {
		if maxBytes < 0 {
			return errors.New("kaniko runner: workspace limit must not be negative")
		}
		o.workspaceMax = maxBytes
		return nil
	}
}

// WithResultCache keeps, under dir, the image of every successful build of
// a tenant under a key over everything that determines it (Dockerfile and
// context contents, build args, labels, target, resolved base image
// digests, network, kaniko flags and executor), and answers an identical
// later build of the same tenant with that image without running kaniko:
// what docker gives when every step is a cache hit. Tenants never share
// entries. The least recently used entries are removed once all of them
// exceed maxBytes (0: DefaultResultCacheBytes). Builds without a tenant,
// or with Request.NoCache, neither read nor fill it. Default: no result
// cache.
func WithResultCache(dir string, maxBytes int64) Option {
	return func(o *options) error {
		if maxBytes < 0 {
			return errors.New("kaniko runner: result cache bound must not be negative")
		}
		if maxBytes == 0 {
			maxBytes = DefaultResultCacheBytes
		}
		o.resultDir, o.resultMax = dir, maxBytes
		return nil
	}
}

// Package gateway assembles a running buildgw from its configuration and
// serves until stopped. It has three layers: Config (this file: the
// file's schema, defaults, Validate and YAML), build (build.go: reads
// what the configuration names, then makes the runners (runners.go), the
// pusher, the job manager and the HTTP server, each once, undoing what
// it made if a step fails) and the host probes (probes.go).
package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/egress"
	"github.com/buildgw/buildgw/runners/kaniko"
)

// Config is the gateway's configuration file. Every field has a default;
// see DefaultConfig and examples/deploy/buildgw.yaml.
type Config struct {
	// Listen is the API's address. Default ":8443". Anything but a
	// loopback address requires TLS.
	Listen string `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
	// IdleTimeout is how long an API connection may wait, kept alive,
	// for its next request before the gateway closes it, so that idle
	// clients cannot hold file descriptors. Default 2m; at least 1s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// RequestBodyTimeout bounds how long the body of a request may take
	// to arrive, unless it is an authenticated build upload (bounded by
	// context.min_upload_bytes_per_second instead): a client that
	// declares a body it never sends, say after its credentials are
	// refused, is cut off then. Default 30s; at least 1s.
	RequestBodyTimeout Duration `yaml:"request_body_timeout"`
	// StateDir holds workspaces and logs. Default /var/lib/buildgw.
	StateDir string `yaml:"state_dir"`
	// Store is where builds are recorded.
	Store JobStore `yaml:"store"`
	// Concurrency is how many builds run at once. Default: number of CPUs.
	Concurrency int `yaml:"concurrency"`
	// JobTimeout bounds one build. Default 1h.
	JobTimeout Duration      `yaml:"job_timeout"`
	Context    ContextLimits `yaml:"context"`
	// AllowNetworks, if set, limits the listener to these CIDRs.
	AllowNetworks []string `yaml:"allow_networks"`
	// Tokens are the static bearer tokens, by name, stored as sha256.
	Tokens []Token `yaml:"tokens"`
	// OIDCIssuers are the CI systems whose JWTs are accepted.
	OIDCIssuers []OIDCIssuer `yaml:"oidc_issuers"`
	// MTLSIdentities map client certificates to identities; they need
	// tls.client_ca_file.
	MTLSIdentities []MTLSIdentity `yaml:"mtls_identities"`
	// PolicyFile decides who may build what; required, deny by default.
	// It is reloaded on SIGHUP and when it changes.
	PolicyFile string `yaml:"policy_file"`
	Audit      Audit  `yaml:"audit"`
	// Registries holds push credentials and trust, by host[:port].
	Registries map[string]Registry `yaml:"registries"`
	// DockerConfig is a Docker config.json whose "auths" give push
	// credentials for registries not listed in Registries.
	DockerConfig string `yaml:"docker_config"`
	// Push bounds how pushes wait out registry trouble.
	Push Push `yaml:"push"`
	// BaseImages is the shared store of base images that the gateway
	// fetches for builds, under state_dir/base-images.
	BaseImages BaseImageStore `yaml:"base_images"`
	Runners    Runners        `yaml:"runners"`
	// DownloadsDir holds the buildctl-lite release binaries
	// (buildctl-lite-{os}-{arch}, SHA256SUMS) served without authentication
	// at /dl/buildctl-lite/{os}/{arch}. Default: the directory of the
	// running buildgw binary if it holds a buildctl-lite, else none.
	DownloadsDir string `yaml:"downloads_dir"`
	// PprofListen, if set, serves Go's net/http/pprof profiles on this
	// loopback address, without authentication, for diagnosing the
	// gateway under load. Default: off.
	PprofListen string `yaml:"pprof_listen"`
	// Lifecycle bounds the queue, shutdown and retention of builds.
	Lifecycle `yaml:",inline"`
	// AcceptEmptyStore starts on a used state directory whose jobs.db is
	// missing or empty (buildgw serve --accept-empty-store); never from
	// the file, so that it cannot stay on by accident.
	AcceptEmptyStore bool `yaml:"-"`
}

// Lifecycle configures the queue and how long builds and their records
// live.
type Lifecycle struct {
	Queue Queue `yaml:"queue"`
	// ShutdownGrace is how long running builds may go on after SIGTERM
	// before they are cancelled. Queued builds stay queued for the next
	// start. Meanwhile the API still answers reads and refuses new builds
	// (503); then log streams end saying how to reattach, and uploads
	// still open get what is left of the period (at least 5s). A second
	// SIGTERM or SIGINT stops at once. Default 30s.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// Retention is how long finished builds' records and logs are kept.
	// Default 168h (7 days).
	Retention Duration `yaml:"retention"`
	// LogMaxBytes caps what one build's log keeps: past it, its first
	// and its last half, with a line saying how many bytes were dropped
	// between them. Default 64 MiB; at least 4 KiB.
	LogMaxBytes int64 `yaml:"log_max_bytes"`
	// MinFreeBytes is the free space of state_dir below which /readyz
	// fails, and below which a running build whose workspace keeps
	// growing is stopped by the disk guard: the free space is read
	// every 50 ms, and a build whose workspace grew while it falls
	// under this is stopped at once. A writer is stopped before the
	// disk fills as long as it writes less than this in about 50 ms
	// plus one walk of its workspace, so set it in proportion to the
	// disk's write speed (at least a second of writes: 1 GiB for a
	// disk of up to 1 GB/s). Default 1 GiB; 0: no check.
	MinFreeBytes uint64 `yaml:"min_free_bytes"`
	// WorkspaceMaxBytes bounds the disk one running build's workspace
	// takes (context, unpacked base images, RUN output, the built image),
	// measured every few seconds while it runs; beyond it the build fails
	// naming this limit. Default 20 GiB; 0: unbounded.
	WorkspaceMaxBytes int64 `yaml:"workspace_max_bytes"`
	// Workspaces is where builds' workspaces live (the extracted context,
	// the kaniko job root with unpacked base images and everything RUN
	// steps write, the built image): "memory", each build on a tmpfs of
	// its own under state_dir/mem, of WorkspaceMaxBytes (at most
	// WorkspaceMemoryBytes divided by the concurrency) reserved out of
	// WorkspaceMemoryBytes (root with CAP_SYS_ADMIN only), or "disk",
	// under state_dir/jobs. Creating
	// files, which builds do by the ten thousand, costs a fraction on a
	// tmpfs (bench/README.md, bench/overhead, has the figures).
	// A build whose reservation (or largest context) does not fit goes
	// to disk. In memory, the files a build writes count against the
	// runner's memory_max, and queued builds survive a restart of the
	// gateway but not of the host. "auto" (default): memory when the
	// gateway can mount a tmpfs, else disk.
	Workspaces string `yaml:"workspaces"`
	// WorkspaceMemoryBytes is the memory all builds' tmpfs may reserve
	// together (or the size of the one the operator mounted at
	// state_dir/mem for a gateway that may not mount). Default: a quarter
	// of the host's memory, at most 16 GiB; under 1 GiB, disk is used.
	WorkspaceMemoryBytes int64 `yaml:"workspace_memory_bytes"`
}

// Queue bounds waiting and running builds; identities take turns.
type Queue struct {
	// MaxQueued builds may wait in all; beyond, submissions get 429 with
	// Retry-After. Default 1000; 0: no bound.
	MaxQueued int `yaml:"max_queued"`
	// MaxQueuedPerIdentity builds of one tenant (the policy rule's
	// tenant; by default one identity, or one project's refs of a class)
	// may wait or upload, so that no tenant fills the queue for the
	// others. Default 0: a tenth of MaxQueued, at least 1 (set it to
	// MaxQueued for no bound of its own).
	MaxQueuedPerIdentity int `yaml:"max_queued_per_identity"`
	// MaxUploadingPerIdentity submissions of one tenant may be uploading
	// their context at once; more get 429. Default 8; 0: no bound.
	MaxUploadingPerIdentity int `yaml:"max_uploading_per_identity"`
	// MaxRunningPerIdentity builds of one tenant may run at once (policy
	// grants may lower it). Default 0: no bound but concurrency.
	MaxRunningPerIdentity int `yaml:"max_running_per_identity"`
}

// perIdentity is MaxQueuedPerIdentity with its default applied.
func (q Queue) perIdentity() int {
	if q.MaxQueuedPerIdentity == 0 && q.MaxQueued > 0 {
		return max(1, q.MaxQueued/10)
	}
	return q.MaxQueuedPerIdentity
}

// JobStore says where builds are recorded.
type JobStore struct {
	// PostgresDSNFile holds the DSN (a postgres:// URL or key=value
	// pairs) of a PostgreSQL database: gateways that share it serve one
	// queue (docs/replication.md). Default empty: the embedded store in
	// state_dir, for one gateway.
	PostgresDSNFile string `yaml:"postgres_dsn_file"`
}

// BaseImageStore bounds the shared base image store.
type BaseImageStore struct {
	// MaxBytes bounds the store; least recently used blobs go first. It
	// bounds the base images of one build together too: a build that
	// needs more fails before any layer is fetched. Default 10 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
}

// TLS is the listener's certificate.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile enables client certificates signed by these CAs.
	ClientCAFile string `yaml:"client_ca_file"`
}

// OIDCIssuer is one CI system's token issuer.
type OIDCIssuer struct {
	// Name prefixes identity names ("gitlab:project_path:g/p:ref_type:...").
	Name string `yaml:"name"`
	// URL is the issuer, as in the tokens' iss claim.
	URL string `yaml:"url"`
	// Audiences accepted in aud; set the CI job's aud to the gateway URL.
	Audiences []string `yaml:"audiences"`
	// Algorithms allowed; default RS256 and ES256. HMAC and none are refused.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew tolerated on exp and nbf; default 60s.
	ClockSkew Duration `yaml:"clock_skew"`
	// NameClaim names the identity after the issuer name; default sub.
	NameClaim string `yaml:"name_claim"`
	// JWKSURL overrides the key set URL from discovery.
	JWKSURL string `yaml:"jwks_url"`
	// CAFile is extra PEM roots for reaching the issuer.
	CAFile string `yaml:"ca_file"`
	// AllowNetworks, if set, limits where these tokens may come from.
	AllowNetworks []string `yaml:"allow_networks"`
	// MaxTokenAge refuses tokens minted to live longer (exp - iat), and
	// tokens without iat. Default 24h.
	MaxTokenAge Duration `yaml:"max_token_age"`
}

// MTLSIdentity maps client certificates to an identity.
type MTLSIdentity struct {
	Name          string            `yaml:"name"`
	SubjectCN     string            `yaml:"subject_cn"`
	DNSNames      []string          `yaml:"dns_names"`
	URIs          []string          `yaml:"uris"`
	Attributes    map[string]string `yaml:"attributes"`
	AllowNetworks []string          `yaml:"allow_networks"`
}

// Audit configures the audit log: one JSON line per authentication
// failure, policy decision and build outcome.
type Audit struct {
	// File is appended to; reopened on SIGHUP (for logrotate).
	File string `yaml:"file"`
	// Stdout also writes the records to standard output.
	Stdout bool `yaml:"stdout"`
	// MaxSize rotates the file at this many bytes; 0: never (use logrotate).
	MaxSize int64 `yaml:"max_size"`
	// MaxBackups is how many rotated files are kept; default 5.
	MaxBackups int `yaml:"max_backups"`
}

// ContextLimits bound an uploaded build context.
type ContextLimits struct {
	// MaxBytes of file content after decompression. Default 2 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxFiles in the archive. Default 100000.
	MaxFiles int `yaml:"max_files"`
	// MinUploadBytesPerSecond is the slowest an upload may arrive,
	// averaged over each UploadRateWindow; a slower one, or one with no
	// data for a whole window, is cut off with 408. Default 4096; 0: no
	// bound.
	MinUploadBytesPerSecond int64 `yaml:"min_upload_bytes_per_second"`
	// UploadRateWindow is the window of MinUploadBytesPerSecond.
	// Default 30s.
	UploadRateWindow Duration `yaml:"upload_rate_window"`
}

// Token is one static bearer token.
type Token struct {
	Name string `yaml:"name"`
	// SHA256 is the hex sha256 of the token (`buildgw hash-token`).
	SHA256 string `yaml:"sha256"`
	// Attributes are what policy rules match for this token.
	Attributes map[string]string `yaml:"attributes"`
	// AllowNetworks, if set, limits where the token may be used from.
	AllowNetworks []string `yaml:"allow_networks"`
}

// Registry is a push destination's credentials and trust.
type Registry struct {
	Username string `yaml:"username"`
	// PasswordFile holds the password, so it stays out of the config.
	PasswordFile string `yaml:"password_file"`
	// CAFile is extra PEM roots for this registry.
	CAFile string `yaml:"ca_file"`
	// Insecure allows plain HTTP for pushes, and for FROM in builds.
	Insecure bool `yaml:"insecure"`
	// SandboxPull, if set, is a read-only account with which the gateway
	// fetches base images from this registry into its base image store,
	// instead of the push account above. Builds of either runner read
	// their base images from that store; the key's name is older than
	// the store.
	SandboxPull *PullAccount `yaml:"sandbox_pull"`
}

// Push configures how the gateway pushes built images.
type Push struct {
	// RetryFor is how long a failing push (5xx, 408, 429, connection
	// error) keeps retrying, with exponential backoff and jitter, before
	// the build fails. Default 5m; 0: no retries.
	RetryFor Duration `yaml:"retry_for"`
	// RequestTimeout bounds how long one registry request may go without
	// progress: before the answer begins, or between two pieces of an
	// upload or answer. Such a registry is hung, so the push fails at
	// once, naming it, without a retry. Default 1m.
	RequestTimeout Duration `yaml:"request_timeout"`
}

// PullAccount is a read-only registry account.
type PullAccount struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// Runners configures the build sandboxes.
type Runners struct {
	Kaniko     KanikoRunner     `yaml:"kaniko"`
	Dind       DindRunner       `yaml:"dind"`
	Kubernetes KubernetesRunner `yaml:"kubernetes"`
	// EgressRefuse lists IPv4 addresses and CIDR networks that RUN steps
	// of either runner never reach in egress mode, on top of the gateway's
	// own host and 169.254.0.0/16, which are always refused: the
	// networks of internal services, say 10.0.0.0/8. Default none.
	EgressRefuse []string `yaml:"egress_refuse"`
}

// DindRunner configures the per-job Docker daemon runner. It is offered
// whenever it is not disabled; if dockerd is missing, /readyz says so and
// builds that ask for it get a 400.
type DindRunner struct {
	// Disabled removes the runner altogether.
	Disabled bool `yaml:"disabled"`
	// Dockerd and Docker are the binaries; default dockerd on PATH
	// (Debian's docker.io, 20.10) and the docker CLI beside it.
	Dockerd string `yaml:"dockerd"`
	Docker  string `yaml:"docker"`
	// Buildx, if set, runs the builds instead of the docker CLI, with the
	// job daemon's own BuildKit (buildx's docker driver): what a dockerd
	// from 23 on needs (scripts/setup --test builds dockerd v28.5.2 and
	// buildx v0.38.2, whose BuildKit builds as current BuildKit does).
	// Default "": the docker CLI.
	Buildx string `yaml:"buildx"`
	// StorageDriver forces the daemons' storage driver. Default: overlay2
	// where an overlay mount works in the state directory, else vfs.
	StorageDriver string `yaml:"storage_driver"`
	// DataRoot is where each job's daemon keeps its images, layers and
	// containers: "tmpfs" (default), a tmpfs of TmpfsBytes in the daemon's
	// own mount namespace, several times faster than a fresh data root on
	// disk and a bound on what one job may store, at the price of memory
	// while the job runs; or "disk", in the job's workspace. When the
	// default size would be under 1 GiB, disk is used.
	DataRoot string `yaml:"data_root"`
	// TmpfsBytes is the size of that tmpfs. Default: the host's memory
	// divided by twice the concurrency, at most 8 GiB, so that running
	// jobs' data roots never hold more than half of the memory.
	TmpfsBytes int64 `yaml:"tmpfs_bytes"`
	// StartTimeout bounds how long a job's daemon may take to answer.
	// Default 60s.
	StartTimeout Duration `yaml:"start_timeout"`
	// Network is what RUN steps reach when the policy rule does not say
	// (allow.network): each job's daemon has a network namespace of its
	// own, which its RUN steps share; none (loopback only) or egress
	// (outbound through slirp4netns, never the gateway's host or
	// 169.254.0.0/16). Default none.
	Network netmode.Mode `yaml:"network"`
}

// KubernetesRunner configures the kubernetes runner (runners/kubernetes):
// each build a Pod of the executor image (buildgw executor-image) in
// Namespace. Off unless Enabled.
type KubernetesRunner struct {
	// Enabled offers the runner as "kubernetes". Default false.
	Enabled bool `yaml:"enabled"`
	// Kubeconfig is the cluster's kubeconfig. Default: the in-cluster
	// configuration (the gateway's ServiceAccount).
	Kubeconfig string `yaml:"kubeconfig"`
	// Namespace holds the build Pods. Default buildgw-builds.
	Namespace string `yaml:"namespace"`
	// Image is the executor image; ImagePullPolicy its pull policy
	// (Always, IfNotPresent, Never). Default buildgw/kaniko-executor:latest,
	// IfNotPresent.
	Image           string `yaml:"image"`
	ImagePullPolicy string `yaml:"image_pull_policy"`
	// DataListen is where the gateway serves Pods their builds' data
	// (host:port; required): context and base images out, the image
	// back, over one-time URLs. DataURL is how Pods reach it; default
	// https://DATA_LISTEN (TLS with a certificate made at start).
	DataListen string `yaml:"data_listen"`
	DataURL    string `yaml:"data_url"`
	// SeccompProfile is the Pods' Localhost profile, relative to the
	// kubelet's seccomp directory (buildgw executor-image
	// --seccomp-profile writes it). Default buildgw-kaniko.json.
	SeccompProfile string `yaml:"seccomp_profile"`
	// User is the Pods' uid and gid. Default 10001.
	User int64 `yaml:"user"`
	// Network is what RUN steps reach unless the policy rule says: none
	// (loopback only) or egress (the Pod's network, which the build's
	// NetworkPolicy keeps from Refuse). Default none.
	Network netmode.Mode `yaml:"network"`
	// Refuse are the CIDRs builds with egress never reach. Default: the
	// private, loopback, link-local (metadata) and CGNAT ranges.
	Refuse []string `yaml:"refuse"`
	// Instance labels this gateway's Pods, so that it reaps only its own
	// at start-up. Default buildgw.
	Instance string `yaml:"instance"`
	// CPURequest, MemoryRequest, CPULimit, MemoryLimit and
	// EphemeralStorageLimit are each Pod's resources (Kubernetes
	// quantities). Default 500m, 1Gi, 2, 4Gi, 20Gi.
	CPURequest            string `yaml:"cpu_request"`
	MemoryRequest         string `yaml:"memory_request"`
	CPULimit              string `yaml:"cpu_limit"`
	MemoryLimit           string `yaml:"memory_limit"`
	EphemeralStorageLimit string `yaml:"ephemeral_storage_limit"`
	// MaxOutputBytes bounds the image a Pod sends back. Default 8 GiB.
	MaxOutputBytes int64 `yaml:"max_output_bytes"`
}

// KanikoRunner configures the rootless kaniko runner.
type KanikoRunner struct {
	// Executor is the kaniko executor built from cmd/kaniko-executor.
	// Default: kaniko-executor next to the buildgw binary, else on PATH.
	Executor string `yaml:"executor"`
	// User runs the sandboxes when buildgw runs as root. Default
	// buildgw-sandbox; it needs /etc/subuid and /etc/subgid ranges.
	User string `yaml:"user"`
	// Flags are extra kaniko flags. Default none.
	Flags []string `yaml:"flags"`
	// Nice is the scheduling niceness of every sandbox process, so that
	// builds yield to the gateway's API, and CI pollers keep their
	// latency while builds use every core. Default 19 (the lowest
	// priority; builds still get all the CPU nothing else wants); 0 keeps
	// the gateway's own priority.
	Nice int `yaml:"nice"`
	// MemoryMax bounds one sandbox's memory, in bytes, through cgroups (v1
	// or v2): a kaniko sandbox's, and a dind job's (its daemon and every
	// container, besides its data root's tmpfs). Default 4 GiB; 0:
	// unbounded.
	MemoryMax int64 `yaml:"memory_max"`
	// PidsMax bounds one sandbox's processes and threads, a kaniko
	// sandbox's or a dind job's. Default 4096; 0: unbounded.
	PidsMax int64 `yaml:"pids_max"`
	// Network is what RUN steps reach when the policy rule does not say
	// (allow.network): none (loopback only) or egress (outbound through
	// slirp4netns, never the gateway's host or 169.254.0.0/16). Default
	// none.
	Network netmode.Mode `yaml:"network"`
	// DisableLayerCache turns off kaniko's layer cache. By default each
	// tenant (named by the policy rule's cache.scope) has a cache of its
	// own under state_dir/layer-cache, which only its builds read and
	// fill.
	DisableLayerCache bool `yaml:"disable_layer_cache"`
	// LayerCacheMaxBytes bounds all tenants' layer caches together; the
	// oldest cached layers of tenants with no build running go first.
	// Default (and 0) 20 GiB.
	LayerCacheMaxBytes int64 `yaml:"layer_cache_max_bytes"`
	// ResultCacheMaxBytes bounds the result cache under
	// state_dir/result-cache: per tenant, the image of each successful
	// build, returned without running kaniko when an identical build
	// (same Dockerfile, context contents, build args, labels, target, base
	// image digests and kaniko flags) comes again. The least recently
	// used entries go first. Default (and 0) 10 GiB. It is off with
	// disable_layer_cache.
	ResultCacheMaxBytes int64 `yaml:"result_cache_max_bytes"`
}

// Duration is a time.Duration written as "90s" or "1h".
type Duration time.Duration

// MarshalYAML writes d as a Go duration string without zero units: "5m",
// "1h", "1h30m", "90ms".
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String is d as MarshalYAML writes it.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:             ":8443",
		IdleTimeout:        Duration(2 * time.Minute),
		RequestBodyTimeout: Duration(30 * time.Second),
		StateDir:           "/var/lib/buildgw",
		JobTimeout:         Duration(time.Hour),
		Context:            ContextLimits{MaxBytes: 2 << 30, MaxFiles: 100000, MinUploadBytesPerSecond: 4096, UploadRateWindow: Duration(30 * time.Second)},
		BaseImages:         BaseImageStore{MaxBytes: basestore.DefaultMaxBytes},
		Push:               Push{RetryFor: Duration(5 * time.Minute), RequestTimeout: Duration(time.Minute)},
		Runners: Runners{
			Kaniko: KanikoRunner{User: "buildgw-sandbox", Nice: 19, MemoryMax: 4 << 30, PidsMax: 4096, Network: "none", LayerCacheMaxBytes: kaniko.DefaultLayerCacheBytes, ResultCacheMaxBytes: kaniko.DefaultResultCacheBytes},
			Dind:   DindRunner{Network: "none"},
		},
		Lifecycle: Lifecycle{
			Queue:             Queue{MaxQueued: 1000, MaxUploadingPerIdentity: 8},
			ShutdownGrace:     Duration(30 * time.Second),
			Retention:         Duration(7 * 24 * time.Hour),
			MinFreeBytes:      1 << 30,
			LogMaxBytes:       64 << 20,
			WorkspaceMaxBytes: 20 << 30,
			Workspaces:        "auto",
		},
	}
}

// LoadConfig reads the YAML file at path over the defaults and validates
// it. Unknown keys are errors, so a typo never silently becomes a default.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks what can be checked of the configuration by itself:
// shapes, ranges, choices, absolute paths and combinations. It reads no
// file and probes nothing, so it may run as often as a Config changes
// (LoadConfig, then New); what needs a file, the host or a component's
// constructor (the policy, the authenticators, registry secrets, TLS
// keys, the runners) is checked by New, once, as it makes each.
func (c *Config) Validate() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("listen: %q is not host:port", c.Listen))
	} else if !isLoopback(host) && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("listen: %q is not loopback, so tls.cert_file and tls.key_file are required", c.Listen))
	}
	if c.IdleTimeout < Duration(time.Second) {
		errs = append(errs, fmt.Errorf("idle_timeout: %s: want at least 1s", c.IdleTimeout))
	}
	if c.RequestBodyTimeout < Duration(time.Second) {
		errs = append(errs, fmt.Errorf("request_body_timeout: %s: want at least 1s", c.RequestBodyTimeout))
	}
	if c.PprofListen != "" {
		if h, _, err := net.SplitHostPort(c.PprofListen); err != nil || !isLoopback(h) {
			errs = append(errs, fmt.Errorf("pprof_listen: %q must be a loopback host:port (profiles are served without authentication)", c.PprofListen))
		}
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state_dir: %q must be an absolute path", c.StateDir))
	}
	if f := c.Store.PostgresDSNFile; f != "" && !filepath.IsAbs(f) {
		errs = append(errs, fmt.Errorf("store.postgres_dsn_file: %q must be an absolute path", f))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency: %d must not be negative", c.Concurrency))
	}
	if c.Context.MinUploadBytesPerSecond < 0 || (c.Context.MinUploadBytesPerSecond > 0 && c.Context.UploadRateWindow < Duration(time.Second)) {
		errs = append(errs, errors.New("context: min_upload_bytes_per_second must not be negative, and upload_rate_window must be at least 1s"))
	}
	if q := c.Queue; q.MaxQueued < 0 || q.MaxQueuedPerIdentity < 0 || q.MaxRunningPerIdentity < 0 || q.MaxUploadingPerIdentity < 0 {
		errs = append(errs, errors.New("queue: bounds must not be negative"))
	}
	if c.Push.RetryFor < 0 || c.Push.RequestTimeout <= 0 {
		errs = append(errs, errors.New("push: retry_for must not be negative, request_timeout must be positive"))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, errors.New("shutdown_grace: must not be negative"))
	}
	if c.LogMaxBytes < 4<<10 {
		errs = append(errs, fmt.Errorf("log_max_bytes: %d: want at least 4 KiB", c.LogMaxBytes))
	}
	if c.WorkspaceMaxBytes < 0 {
		errs = append(errs, errors.New("workspace_max_bytes: must not be negative (0: unbounded)"))
	}
	if n := c.Runners.Kaniko.Nice; n < 0 || n > 19 {
		errs = append(errs, fmt.Errorf("runners.kaniko.nice: %d: want 0 to 19", n))
	}
	switch c.Workspaces {
	case "", "auto", "memory", "disk":
	default:
		errs = append(errs, fmt.Errorf("workspaces: %q: want auto, memory or disk", c.Workspaces))
	}
	if c.WorkspaceMemoryBytes < 0 || (c.WorkspaceMemoryBytes > 0 && c.WorkspaceMemoryBytes < 64<<20) {
		errs = append(errs, fmt.Errorf("workspace_memory_bytes: %d: want at least 64 MiB (0: the default)", c.WorkspaceMemoryBytes))
	}
	if c.Retention <= 0 {
		errs = append(errs, errors.New("retention: must be positive"))
	}
	if c.JobTimeout <= 0 {
		errs = append(errs, errors.New("job_timeout: must be positive"))
	}
	if err := c.Runners.Kaniko.Network.Check(); err != nil {
		errs = append(errs, fmt.Errorf("runners.kaniko.network: %w", err))
	}
	if _, err := egress.ParseRefuse(c.Runners.EgressRefuse); err != nil {
		errs = append(errs, fmt.Errorf("runners.egress_refuse: %w", err))
	}
	if c.BaseImages.MaxBytes <= 0 {
		errs = append(errs, errors.New("base_images: max_bytes must be positive"))
	}
	if c.Context.MaxBytes <= 0 || c.Context.MaxFiles <= 0 {
		errs = append(errs, errors.New("context: max_bytes and max_files must be positive"))
	}
	if len(c.Tokens)+len(c.OIDCIssuers)+len(c.MTLSIdentities) == 0 {
		errs = append(errs, errors.New("no identities: configure tokens, oidc_issuers or mtls_identities"))
	}
	if len(c.MTLSIdentities) > 0 && c.TLS.ClientCAFile == "" {
		errs = append(errs, errors.New("mtls_identities need tls.client_ca_file"))
	}
	if c.PolicyFile == "" {
		errs = append(errs, errors.New("policy_file: required (deny by default; see examples/policy/policy.yaml)"))
	}
	for _, f := range []string{c.TLS.ClientCAFile, c.Audit.File} {
		if f != "" && !filepath.IsAbs(f) {
			errs = append(errs, fmt.Errorf("%q must be an absolute path", f))
		}
	}
	for host, r := range c.Registries {
		if strings.ContainsAny(host, "/ ") || host == "" {
			errs = append(errs, fmt.Errorf("registries: %q is not a host[:port]", host))
		}
		if r.SandboxPull != nil {
			if r.SandboxPull.Username == "" || r.SandboxPull.PasswordFile == "" {
				errs = append(errs, fmt.Errorf("registries[%s].sandbox_pull: username and password_file are required", host))
			} else if r.SandboxPull.PasswordFile == r.PasswordFile || r.SandboxPull.Username == r.Username {
				errs = append(errs, fmt.Errorf("registries[%s].sandbox_pull: must be a separate read-only account, not the push account", host))
			}
		}
	}
	if d := c.Runners.Dind; !d.Disabled {
		if d.DataRoot != "" && d.DataRoot != "tmpfs" && d.DataRoot != "disk" {
			errs = append(errs, fmt.Errorf("runners.dind.data_root: %q: want tmpfs or disk", d.DataRoot))
		}
		if d.Network != "" {
			if err := d.Network.Check(); err != nil {
				errs = append(errs, fmt.Errorf("runners.dind.network: %w", err))
			}
		}
	}
	if k := c.Runners.Kubernetes; k.Enabled {
		if k.DataListen == "" {
			errs = append(errs, errors.New("runners.kubernetes.data_listen: required when the runner is enabled"))
		}
		if k.Network != "" {
			if err := k.Network.Check(); err != nil {
				errs = append(errs, fmt.Errorf("runners.kubernetes.network: %w", err))
			}
		}
	}
	if c.DownloadsDir != "" && !filepath.IsAbs(c.DownloadsDir) {
		errs = append(errs, fmt.Errorf("downloads_dir: %q must be an existing absolute directory", c.DownloadsDir))
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

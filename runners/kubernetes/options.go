package kubernetes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"

	"github.com/buildgw/buildgw/netmode"
)

// Option configures a Runner.
type Option func(*options) error

type options struct {
	namespace  string
	image      string
	pullPolicy corev1.PullPolicy
	kubeconfig string
	rest       *rest.Config
	listen     string
	dataURL    string
	timeout    time.Duration
	seccomp    string
	user       int64
	network    netmode.Mode
	instance   string
	refuse     []netip.Prefix
	resources  corev1.ResourceRequirements
	maxOutput  int64
	deleteWait time.Duration
}

// Defaults.
const (
	// DefaultNamespace is where build Pods run.
	DefaultNamespace = "buildgw-builds"
	// DefaultImage is the executor image (see ExecutorImage), as an
	// operator pushes it.
	DefaultImage = "buildgw/kaniko-executor:latest"
	// DefaultTimeout is a build Pod's activeDeadlineSeconds.
	DefaultTimeout = time.Hour
	// DefaultInstance labels this gateway's Pods, so that a restarted
	// gateway reaps its own orphans and no other gateway's.
	DefaultInstance = "buildgw"
	// DefaultMaxOutputBytes bounds the image a Pod sends back.
	DefaultMaxOutputBytes = 8 << 30
	// DefaultDeleteWait bounds how long Build waits for its Pod to be
	// gone, after the build ended or was cancelled.
	DefaultDeleteWait = 2 * time.Minute
)

// DefaultRefuse are the addresses a build with egress never reaches: the
// private ranges where clusters put Pods, Services and nodes, loopback,
// link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254) and
// carrier-grade NAT.
var DefaultRefuse = []string{
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
	"169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8",
	"fc00::/7", "fe80::/10", "::1/128",
}

// WithNamespace sets the namespace of build Pods. Default DefaultNamespace.
func WithNamespace(ns string) Option {
	return func(o *options) error { o.namespace = ns; return nil }
}

// WithImage sets the executor image and its pull policy. Default
// DefaultImage, IfNotPresent.
func WithImage(ref string, pull corev1.PullPolicy) Option {
	return func(o *options) error { o.image, o.pullPolicy = ref, pull; return nil }
}

// WithKubeconfig makes the runner use the kubeconfig at path. Default: the
// in-cluster configuration (the gateway's ServiceAccount).
func WithKubeconfig(path string) Option {
	return func(o *options) error { o.kubeconfig = path; return nil }
}

// WithRESTConfig makes the runner use c. Default: see WithKubeconfig.
func WithRESTConfig(c *rest.Config) Option {
	return func(o *options) error { o.rest = c; return nil }
}

// WithDataServer sets where the runner's data server listens (host:port;
// required), from which Pods fetch a build's context and base images and
// to which they send the image, and the https URL by which Pods reach it
// (default https://LISTEN), whose host must be an IP address: each build's
// NetworkPolicy allows it by address. The server makes its own
// certificate, for the URL's host, which Pods trust and nothing else.
func WithDataServer(listen, url string) Option {
	return func(o *options) error { o.listen, o.dataURL = listen, url; return nil }
}

// WithTimeout sets a build Pod's activeDeadlineSeconds and the life of
// its one-time URLs. Default DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error { o.timeout = d; return nil }
}

// WithSeccompProfile sets the Pods' seccomp profile: a Localhost profile
// path relative to the kubelet's seccomp directory, or "RuntimeDefault"
// (with which the sandbox cannot start: see SeccompProfile). Default
// SeccompProfileName.
func WithSeccompProfile(p string) Option {
	return func(o *options) error { o.seccomp = p; return nil }
}

// WithUser sets the Pods' uid and gid (non-zero). Default ImageUser.
func WithUser(id int64) Option {
	return func(o *options) error { o.user = id; return nil }
}

// WithNetwork sets the network of builds whose request names none.
// Default netmode.None.
func WithNetwork(m netmode.Mode) Option {
	return func(o *options) error { o.network = m; return nil }
}

// WithInstance sets the value of the instance label on this gateway's
// Pods. Default DefaultInstance.
func WithInstance(name string) Option {
	return func(o *options) error { o.instance = name; return nil }
}

// WithRefuse sets the CIDRs builds with egress never reach. Default
// DefaultRefuse.
func WithRefuse(cidrs ...string) Option {
	return func(o *options) error {
		o.refuse = nil
		for _, c := range cidrs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return fmt.Errorf("kubernetes runner: refused network %q: %w", c, err)
			}
			o.refuse = append(o.refuse, p.Masked())
		}
		return nil
	}
}

// WithResources sets a build Pod's CPU and memory requests and limits.
// Default: requests 500m CPU and 1Gi memory, limits 2 CPUs, 4Gi memory
// and 20Gi ephemeral storage.
func WithResources(r corev1.ResourceRequirements) Option {
	return func(o *options) error { o.resources = r; return nil }
}

// WithMaxOutputBytes bounds the image a Pod sends back. Default
// DefaultMaxOutputBytes.
func WithMaxOutputBytes(n int64) Option {
	return func(o *options) error { o.maxOutput = n; return nil }
}

func makeOptions(opts ...Option) (options, error) {
	o := options{
		namespace:  DefaultNamespace,
		image:      DefaultImage,
		pullPolicy: corev1.PullIfNotPresent,
		timeout:    DefaultTimeout,
		seccomp:    SeccompProfileName,
		user:       ImageUser,
		network:    netmode.None,
		instance:   DefaultInstance,
		maxOutput:  DefaultMaxOutputBytes,
		deleteWait: DefaultDeleteWait,
		resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("500m"),
				corev1.ResourceMemory: resource.MustParse("1Gi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("2"),
				corev1.ResourceMemory:           resource.MustParse("4Gi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
			},
		},
	}
	if err := WithRefuse(DefaultRefuse...)(&o); err != nil {
		return o, err
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	if o.listen == "" {
		return o, errors.New("kubernetes runner: no data server address (WithDataServer)")
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return o, fmt.Errorf("kubernetes runner: data server address %q: %w", o.listen, err)
	}
	if o.user <= 0 {
		return o, fmt.Errorf("kubernetes runner: Pod user %d: want a non-root uid", o.user)
	}
	if o.timeout < time.Second {
		return o, fmt.Errorf("kubernetes runner: timeout %s: want at least a second", o.timeout)
	}
	if err := o.network.Check(); err != nil {
		return o, fmt.Errorf("kubernetes runner: %w", err)
	}
	if o.namespace == "" || o.image == "" || o.instance == "" {
		return o, errors.New("kubernetes runner: namespace, image and instance must not be empty")
	}
	return o, nil
}

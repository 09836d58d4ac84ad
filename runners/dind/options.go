package dind

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/cgroup"
	"github.com/buildgw/buildgw/runners/egress"
)

// Option configures a Runner.
type Option func(*options) error

type options struct {
	dockerd string
	docker  string
	// buildx, if set, runs the build instead of the docker CLI.
	buildx string
	// init runs as the daemon namespace's pid 1 and reaps its orphans;
	// "" runs dockerd itself as pid 1.
	init        string
	sh          string
	mount       string
	storage     string
	network     netmode.Mode
	refuse      []string // egress.ParseRefuse's
	caCerts     string
	startTime   time.Duration
	stopTimeout time.Duration
	cgroupRoot  string
	cgroups     string // cgroup mount
	limits      cgroup.Limits
	tmpfs       int64
	tools       egress.Tools
}

// Defaults.
const (
	// DefaultNetwork is the network of a job's daemon, and of its RUN
	// steps, when the request names none: loopback only, like the kaniko
	// runner's default. Base images come from the gateway, so a build
	// needs no network unless its RUN steps do.
	DefaultNetwork = netmode.None
	// DefaultStartTimeout bounds how long a per-job daemon may take to
	// answer /_ping.
	DefaultStartTimeout = 60 * time.Second
	// DefaultCgroupRoot is the cgroup (under every v1 hierarchy, or the
	// v2 root) that holds one child per job, the parent of the job's
	// containers.
	DefaultCgroupRoot = "/buildgw-dind"
)

// defaultInit stands for "docker-init, else tini, else none".
const defaultInit = "\x00default"

func makeOptions(opts ...Option) (options, error) {
	o := options{
		dockerd:     "dockerd",
		init:        defaultInit,
		sh:          "/bin/sh",
		mount:       "mount",
		network:     DefaultNetwork,
		caCerts:     "/etc/ssl/certs/ca-certificates.crt",
		startTime:   DefaultStartTimeout,
		stopTimeout: 0,
		cgroupRoot:  DefaultCgroupRoot,
		cgroups:     "/sys/fs/cgroup",
		tools:       egress.DefaultTools(),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	switch o.storage {
	case "", "overlay2", "vfs", "fuse-overlayfs", "btrfs", "zfs":
	default:
		return o, fmt.Errorf("dind runner: unsupported storage driver %q", o.storage)
	}
	if err := o.network.Check(); err != nil {
		return o, fmt.Errorf("dind runner: %w", err)
	}
	if o.tmpfs < 0 || (o.tmpfs > 0 && o.tmpfs < 64<<20) {
		return o, fmt.Errorf("dind runner: tmpfs size %d: want 0 (none) or at least 64 MiB", o.tmpfs)
	}
	if o.startTime <= 0 {
		return o, errors.New("dind runner: start timeout must be positive")
	}
	if o.cgroupRoot == "" || !filepath.IsAbs(o.cgroupRoot) || filepath.Clean(o.cgroupRoot) == "/" {
		return o, fmt.Errorf("dind runner: cgroup root %q must be an absolute path below /", o.cgroupRoot)
	}
	o.cgroupRoot = filepath.Clean(o.cgroupRoot)
	// Paths are resolved once, here, so that every job runs the same
	// binaries and Available can name what is missing. A missing binary
	// is not an error yet: the gateway starts anyway and reports the
	// runner unavailable.
	o.dockerd = resolve(o.dockerd)
	if o.docker == "" {
		o.docker = defaultDocker(o.dockerd)
	} else {
		o.docker = resolve(o.docker)
	}
	if o.init == defaultInit {
		// Without an init, dockerd is the namespace's pid 1: it works,
		// but orphaned shims stay zombies until the job ends.
		o.init = ""
		for _, c := range []string{"docker-init", "tini"} {
			if p, err := exec.LookPath(c); err == nil {
				o.init = abs(p)
				break
			}
		}
	} else if o.init != "" {
		o.init = resolve(o.init)
	}
	if o.buildx != "" {
		o.buildx = resolve(o.buildx)
	}
	o.mount = resolve(o.mount)
	return o, nil
}

// resolve returns the absolute path of the executable p (looked up in
// PATH when it has no slash), or p unchanged when it cannot be found.
func resolve(p string) string {
	if lp, err := exec.LookPath(p); err == nil {
		return abs(lp)
	}
	return p
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// defaultDocker picks the docker CLI shipped with dockerd: next to it
// (static installs), or in the sibling bin directory (Debian's docker.io
// puts dockerd in /usr/sbin and docker in /usr/bin), before any other
// docker on PATH, which may be a different major version.
func defaultDocker(dockerd string) string {
	if filepath.IsAbs(dockerd) {
		dir := filepath.Dir(dockerd)
		for _, c := range []string{filepath.Join(dir, "docker"), filepath.Join(filepath.Dir(dir), "bin", "docker")} {
			if p, err := exec.LookPath(c); err == nil {
				return abs(p)
			}
		}
	}
	return resolve("docker")
}

// WithDockerd sets the dockerd binary. Default "dockerd" from PATH.
func WithDockerd(path string) Option {
	return func(o *options) error { o.dockerd = path; return nil }
}

// WithDocker sets the docker CLI that runs the build against the job's
// daemon. Default: the docker next to dockerd (or in ../bin from it),
// else "docker" from PATH.
func WithDocker(path string) Option {
	return func(o *options) error { o.docker = path; return nil }
}

// WithBuildx makes buildx (a standalone binary, docker-buildx or buildx)
// run each build against the job's daemon instead of the docker CLI, with
// the daemon's own BuildKit (buildx's docker driver, never a builder
// container). A docker CLI from 23 on builds with BuildKit only through
// buildx, and a newer dockerd's BuildKit needs a newer client than 20.10's
// CLI: its context transfer loses COPY sources whose names hold "+" or
// non-ASCII characters. Default "": the docker CLI (WithDocker) builds,
// as Debian's docker.io 20.10 does with BuildKit built in.
func WithBuildx(path string) Option {
	return func(o *options) error { o.buildx = path; return nil }
}

// WithInit sets the init that runs as pid 1 of the daemon's pid
// namespace and reaps orphaned processes. Default "docker-init" (tini,
// shipped with Docker), else "tini", else none; "" for none.
func WithInit(path string) Option {
	return func(o *options) error { o.init = path; return nil }
}

// WithStorageDriver forces the daemons' storage driver. Default: overlay2
// if an overlay mount works in the state directory (probed once, on the
// first build), else vfs.
func WithStorageDriver(name string) Option {
	return func(o *options) error { o.storage = name; return nil }
}

// WithNetwork sets the network of builds whose request names none (the
// network namespace of the job's daemon, which its RUN steps share):
// netmode.None (loopback only; the default, DefaultNetwork) or
// netmode.Egress (outbound through slirp4netns; the host's loopback and
// own addresses and 169.254.0.0/16 refused).
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
			return fmt.Errorf("dind runner: %w", err)
		}
		o.refuse = r
		return nil
	}
}

// WithStartTimeout bounds how long a job's daemon may take to answer.
// Default DefaultStartTimeout.
func WithStartTimeout(d time.Duration) Option {
	return func(o *options) error { o.startTime = d; return nil }
}

// WithCgroupRoot sets the cgroup under which each job's containers get a
// cgroup of their own (passed to dockerd as --cgroup-parent and removed
// at teardown). Default DefaultCgroupRoot.
func WithCgroupRoot(path string) Option {
	return func(o *options) error { o.cgroupRoot = path; return nil }
}

// WithLimits bounds each job's memory (bytes, swap included) and
// processes (pids, threads included): its daemon, containerd, the shims
// and every RUN container are in the job's cgroup, with these limits,
// from before dockerd starts. With WithTmpfs the tmpfs, bounded by its own
// size, is charged to the job too: the memory limit is raised by that
// size. Zero fields are unbounded. Default: unbounded.
func WithLimits(memoryBytes, pids int64) Option {
	return func(o *options) error {
		if memoryBytes < 0 || pids < 0 {
			return errors.New("dind runner: limits must not be negative")
		}
		o.limits = cgroup.Limits{MemoryBytes: memoryBytes, Pids: pids}
		return nil
	}
}

// WithTmpfs puts each job's data root (images, layers, the build's
// containers) on a tmpfs of size bytes, mounted in the daemon's own mount
// namespace: it never touches the disk, it bounds what a job may store
// (a build that needs more fails with "no space left on device"), and it
// vanishes with the daemon, so there is nothing to delete afterwards. It
// costs memory (RAM, or swap), up to size per running job. Default 0: the
// data root is on disk, in the job's workspace. See bench/README.md.
func WithTmpfs(size int64) Option {
	return func(o *options) error { o.tmpfs = size; return nil }
}

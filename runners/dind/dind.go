// Package dind runs each build against a Docker daemon of its own, started
// for the job and destroyed after it, so that no job shares a daemon, an
// image store or a socket with another, and none ever sees the host's.
//
// # The per-job daemon
//
// Build starts dockerd (20.10 from Debian's docker.io, or any later one)
// with all of its state under WORKSPACE/dind:
//
//	data/     --data-root (images, containers, the managed containerd's root)
//	run/      --host unix://.../run/docker.sock (never TCP), --pidfile
//	etc/      --config-file (so /etc/docker/daemon.json is never read),
//	          the daemon's key (20.10 would write /etc/docker/key.json),
//	          the resolv.conf of its namespace, the initial reference store
//	client/   DOCKER_CONFIG of the docker CLI: empty, no credential
//	home/     HOME of both
//	certs/    the CA bundle with Request.ExtraCAs (SSL_CERT_FILE)
//
// and --exec-root /run/docker, a private tmpfs of the daemon's mount
// namespace (containerd's state and sockets: dockerd starts its own
// containerd there since no --containerd is given; a path under the
// workspace could exceed containerd's 104-byte socket path limit), with
// --bridge=none --iptables=false --ip6tables=false --ip-masq=false
// --ip-forward=false --userland-proxy=false (no host firewall, sysctl or
// bridge changes), --insecure-registry for each Request.InsecureRegistries
// entry, --exec-opt native.cgroupdriver=cgroupfs and --cgroup-parent
// /buildgw-dind/JOB (so the job's containers have a cgroup subtree of
// their own, removed at teardown), and a fixed environment (PATH, HOME,
// SSL_CERT_FILE; nothing of the gateway's, no DOCKER_* variable).
//
// The daemon runs as pid 1 (under Docker's init, tini, when installed) of
// a new pid namespace, in a new private mount namespace and a new network
// namespace. A small /bin/sh script first mounts the namespace's /proc and
// private tmpfs over /run/docker and /run/containerd, where dockerd and
// containerd put plugin and shim sockets whatever --exec-root says, and
// the job's resolv.conf over /etc/resolv.conf. So:
//   - killing that one process makes the kernel kill every process of the
//     daemon: dockerd, containerd, the shims and the build's containers
//     (which live in pid namespaces below it), and the runner knows they
//     are all gone when it has reaped it;
//   - every mount the daemon makes (overlays, shm, netns) exists only in
//     its mount namespace and vanishes with it: the host's mount table
//     never sees them;
//   - Pdeathsig kills the namespace if the gateway dies.
//
// The runner waits for /_ping on the socket (DefaultStartTimeout), loads
// the base images (below), then runs the docker CLI against it:
// DOCKER_BUILDKIT=1 docker build --progress=plain --file --tag
// buildgw/job:ID --iidfile --network=host --pull=false --build-arg --label
// --target CONTEXT. That is the daemon's own BuildKit, as `docker build`
// builds today, not the legacy builder (which differs from BuildKit in
// WORKDIR ownership, VOLUME, ADD of several archives, the proxy ARGs:
// compat/known.yaml); the 20.10 CLI has a BuildKit client built in. With
// WithBuildx (what a dockerd from 23 on needs) buildx builds instead, with
// the same flags and --builder=default --load --provenance=false
// --sbom=false, and the daemon as DOCKER_HOST=unix://SOCKET (buildx has
// no --host): the "default" builder is buildx's docker driver, the
// daemon's own BuildKit, the image goes into the daemon's image store as
// with docker build, and no builder container or other endpoint is ever
// used (the command's environment is fixed: nothing of the gateway's, so
// no BUILDX_BUILDER, DOCKER_CONTEXT, BUILDKIT_HOST, telemetry endpoint
// (OTEL_*) or proxy, and DOCKER_CONFIG is the job's empty client
// directory). --progress=plain prints every step's output line by line
// (prefixed with the step's number), and that goes to the build log line
// by line. The image is exported through the Engine API (GET
// /images/get): the docker-save stream becomes, as it arrives, an OCI
// layout in Request.OutputDir like the kaniko runner's, each layer
// gzip-compressed once on the way (checked against the config's diff IDs,
// and the config against the built image's ID), so the gateway's push
// only uploads files. The leading layers that are the final base's
// (BaseImages.Final) are not compressed again: the layout gets the base's
// own blobs, with the base's digests, so that the registry stores them
// once and pulls share them (baselayers.go). The gateway pushes it: no
// push credential ever reaches the daemon.
//
// Teardown kills the namespace (SIGKILL: its state is deleted right after,
// so a clean shutdown would save nothing), waits for it, kills anything still naming the
// job's directory in its command line, removes the job's cgroups and any
// mount under the directory (lazily, deepest first). Build returns only
// after that, whether the build succeeded, failed or was cancelled: no
// process of the job runs and nothing of it is mounted. As builder.Runner
// allows, the daemon's files (WORKSPACE/dind, mostly the data root) stay
// for the Manager, which removes the workspace after the build is
// reported, through the runner's RemoveAll (builder.Remover): unlinking a
// data root on disk takes about a second (bench/README.md, bench/dind),
// off the build's critical path that way. Daemon.Stop, which the Manager
// does not use, deletes them too.
//
// # Network
//
// The daemon's network namespace is the job's: Request.Network, else
// WithNetwork (default none). "none" is loopback only (brought up by the
// runner). "egress" connects it to the outside through slirp4netns, run
// by the runner in the gateway's namespace, with the host's loopback, the
// host's own addresses and 169.254.0.0/16 refused by rules inside the
// namespace (package egress, shared with the kaniko runner); names
// resolve through slirp4netns's DNS forwarder. RUN containers are started
// with --network=host, which in the daemon's namespace means that
// namespace: they never get the gateway host's network, and, lacking
// CAP_NET_ADMIN (Docker's default capabilities), cannot change interfaces
// or rules. They hold CAP_NET_RAW, though, and BuildKit gives them
// containerd's default seccomp profile, not the daemon's
// --seccomp-profile (which only the legacy builder's containers get): so
// the daemon itself is started from a thread carrying the socket filter of
// package sandbox/sockfilter, which every process of the daemon inherits
// and none can remove. No RUN step can make packet or raw sockets, or use
// io_uring, whichever builder runs it. The daemon has --bridge=none
// --iptables=false: it changes no firewall anywhere.
//
// # Base images
//
// The daemon never pulls. The gateway resolves, checks and fetches every
// image the Dockerfile names into its shared store and hands the build an
// OCI layout of them (Request.BaseImages, see builder.BasePreparer). The
// runner streams that layout into the daemon as one docker-save archive
// (POST /images/load; the compressed layers as stored, which dockerd
// decompresses) with each image tagged as the Dockerfile names it (the
// docker CLI's familiar form: Docker Hub images without docker.io/ and
// library/). docker load cannot record references by digest, which the
// daemon's builder looks up in its reference store for FROM
// NAME@sha256:DIGEST (and NAME:TAG@sha256:DIGEST): those are written into
// the reference store (data-root/image/DRIVER/repositories.json) before
// the daemon starts, pointing at the image IDs (config digests) the load
// then fills in. The runner checks that the daemon finds every image by
// its reference before it builds, and builds with --pull=false, so a base
// image the gateway did not fetch fails the build: the daemon has no
// registry credential, and with network none no way to a registry either.
// Loading costs about what a pull from a registry on the same host costs
// (bench/README.md, bench/dind).
//
// # Storage
//
// Unless WithStorageDriver says otherwise, the first build probes an
// overlay mount in its job directory: overlay2 if it works (it does on the
// development machines: ext4, kernel 6.x, cgroup v1), else vfs (slow,
// but works everywhere, e.g. when the state directory is itself on
// overlayfs). The result is kept for the Runner's lifetime.
//
// The data root is on disk by default. WithTmpfs(size) mounts a tmpfs of
// that size over it inside the daemon's mount namespace instead: a
// per-job disk limit, nothing written to the disk, nothing to delete
// afterwards, and much faster builds where the disk is slow or shared
// (several times faster for bench/dind's reference build: figures in
// bench/README.md), at the price of memory.
//
// # Limitations
//
//   - The daemon is rootful and the build's containers run as real root
//     (with Docker's default seccomp and capabilities); the gateway must
//     run as root.
//   - The daemon never pulls: ExtraCAs and InsecureRegistries are still
//     passed to it (SSL_CERT_FILE, --insecure-registry), but no FROM needs
//     them now.
//   - Images in zstd layers cannot be loaded into dockerd 20.10; such a
//     base fails the build, naming it.
//   - No CPU limit is set. WithLimits bounds memory and processes: the
//     cgroup parent /buildgw-dind/JOB gets the limits and holds the
//     daemon (in its leaf daemon, joined before dockerd starts) and every
//     container. A build stopped by them fails with its step's error in
//     the log (a fork refused, a process killed), but the error does not
//     name the limit as the kaniko runner's does: on cgroup v1 the group
//     that counts the event is the RUN container's, gone by then.
//     WithTmpfs bounds the data root's size.
//   - The host's /run/docker and /run/containerd are created (empty) if
//     missing, as mount points; nothing is written into them.
//   - Docker 20.10's BuildKit (Debian's docker.io, the default) is v0.8
//     and its built-in Dockerfile frontend 1.2: COPY --chmod, RUN --mount
//     and the platform ARGs work, heredocs, TARGETSTAGE (PredefinedArgs
//     says so, and the gateway refuses a FROM that needs it),
//     ${VAR%%word} and COPY --chmod=$ARG do not, and a # syntax= line
//     fails the build, since the daemon pulls no frontend image. Measured
//     with compat's corpus, it also gives RUN steps no supplementary
//     groups, runs an ONBUILD COPY --from (a stage or an image) without
//     its files, keeps no Entrypoint for an invalid JSON form and does not
//     refuse an invalid COPY --chmod: 61 of 70 cases as BuildKit v0.22. A
//     newer dockerd (WithDockerd) driven by buildx (WithBuildx) brings a
//     newer BuildKit: dockerd v28.5.2 and buildx v0.38.2, built from the
//     Go module proxy by scripts/setup --test, are what this package's
//     tests and compat's dind column build with, and they build all 70 as
//     BuildKit v0.22 does (compat/known.yaml lists no dind difference;
//     BUILDGW_COMPAT_DOCKERD=/usr/sbin/dockerd measures 20.10 again).
//     The 20.10 CLI against dockerd v28 (WithDocker) loses COPY sources
//     with "+" or non-ASCII names in its older context transfer: use
//     buildx.
//   - buildx prints its warnings' summary line in color (ANSI escapes)
//     whatever its output is.
//   - RUN steps see the host name buildkitsandbox (RunHostname), BuildKit's,
//     in a UTS namespace of their own.
package dind

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/cgroup"
)

// Runner builds each job against a Docker daemon of its own.
type Runner struct {
	o options

	mu     sync.Mutex
	driver string // probed storage driver, once
	ran    bool   // dockerd --version succeeded once
	major  int    // dockerd's major version, once it ran; 0 unknown
}

var (
	_ builder.Runner  = (*Runner)(nil)
	_ builder.Checker = (*Runner)(nil)
	_ builder.Remover = (*Runner)(nil)
	_ builder.Reaper  = (*Runner)(nil)
)

// New returns a Runner. Missing binaries are not an error here: Available
// reports them, so that a gateway starts without Docker installed.
func New(opts ...Option) (*Runner, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	return &Runner{o: o}, nil
}

// Docker is the docker CLI the runner uses when it has no buildx.
func (r *Runner) Docker() string { return r.o.docker }

// Buildx is the buildx the runner builds with, or "" for the docker CLI.
func (r *Runner) Buildx() string { return r.o.buildx }

// Dockerd is the dockerd the runner starts.
func (r *Runner) Dockerd() string { return r.o.dockerd }

// runsOnce starts dockerd --version until it succeeds once. Available is
// asked at every submission: on a busy host a fresh start of the 100 MB
// binary each time would cost every build and could miss the deadline.
func (r *Runner) runsOnce(ctx context.Context) error {
	r.mu.Lock()
	ran := r.ran
	r.mu.Unlock()
	if ran {
		return nil
	}
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(vctx, r.o.dockerd, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("dockerd %s does not run: %v: %s", r.o.dockerd, err, strings.TrimSpace(string(out)))
	}
	r.mu.Lock()
	r.ran = true
	r.major = majorVersion(string(out))
	r.mu.Unlock()
	return nil
}

// dockerdVersion matches the major version in dockerd --version's
// "Docker version 20.10.24+dfsg1, build 5d6db84".
var dockerdVersion = regexp.MustCompile(`^Docker version v?([0-9]+)\.`)

// majorVersion returns the major version dockerd --version prints, or 0.
func majorVersion(out string) int {
	m := dockerdVersion.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0
	}
	return n
}

// targetStageSince is the first dockerd major version whose BuildKit is
// known to predefine TARGETSTAGE (28.5.2 measured; 20.10's BuildKit v0.8
// does not).
const targetStageSince = 28

// PredefinedArgs returns which of BuildKit's global ARGs
// (dockerfile.PlatformArgs) the job daemon's BuildKit predefines, whether
// the docker CLI or buildx drives it: all from dockerd 28 on; before
// (Docker 20.10's BuildKit v0.8), or when dockerd's version cannot be
// read, all but TARGETSTAGE, so that a FROM naming it without a value is
// refused at submission rather than built from another image than the
// gateway's analysis resolved.
func (r *Runner) PredefinedArgs() []string {
	all := dockerfile.PlatformArgs()
	// Normally known already: Available runs dockerd --version first.
	if r.runsOnce(context.Background()) == nil {
		r.mu.Lock()
		major := r.major
		r.mu.Unlock()
		if major >= targetStageSince {
			return all
		}
	}
	return slices.DeleteFunc(all, func(k string) bool { return k == "TARGETSTAGE" })
}

// PredefinedArgsPlatform returns the platform the job's daemon builds on
// and for, this host's: its BuildKit predefines BuildKit's global ARGs
// (TARGETOS, TARGETARCH...; which of them, PredefinedArgs says) with it,
// so the gateway's Dockerfile analysis may resolve FROM with the same
// values.
func (r *Runner) PredefinedArgsPlatform() v1.Platform {
	p := platforms.Normalize(platforms.DefaultSpec())
	return v1.Platform{OS: p.OS, OSVersion: p.OSVersion, Architecture: p.Architecture, Variant: p.Variant}
}

// Available reports why no daemon can be started here, or nil.
func (r *Runner) Available(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("the dind runner needs root: dockerd runs rootful")
	}
	if err := executable(r.o.dockerd); err != nil {
		return fmt.Errorf("dockerd not found (install Debian's docker.io): %w", err)
	}
	if err := r.runsOnce(ctx); err != nil {
		return err
	}
	if r.o.buildx != "" {
		if err := executable(r.o.buildx); err != nil {
			return fmt.Errorf("buildx not found: %w", err)
		}
	} else if err := executable(r.o.docker); err != nil {
		return fmt.Errorf("docker CLI not found (install Debian's docker.io): %w", err)
	}
	// What dockerd runs, found on the PATH it gets.
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := lookPathIn(b, daemonPath(r.o.dockerd)); err != nil {
			return fmt.Errorf("%s not found next to dockerd or in the system PATH (install Debian's docker.io)", b)
		}
	}
	if err := executable(r.o.mount); err != nil {
		return fmt.Errorf("mount (util-linux) not found: %w", err)
	}
	if err := executable(r.o.sh); err != nil {
		return fmt.Errorf("%s not found: %w", r.o.sh, err)
	}
	if r.o.init != "" {
		if err := executable(r.o.init); err != nil {
			return fmt.Errorf("init for the daemon's namespace: %w", err)
		}
	}
	if r.o.limits != (cgroup.Limits{}) {
		if v := cgroup.New(r.o.cgroups, r.o.cgroupRoot).Version(); v == cgroup.None {
			return fmt.Errorf("memory and pids limits need cgroups, and %s has neither v1 nor v2", r.o.cgroups)
		}
	}
	if r.o.network == netmode.Egress {
		if err := r.o.tools.Check(); err != nil {
			return err
		}
	}
	return nil
}

func executable(p string) error {
	if !filepath.IsAbs(p) {
		_, err := exec.LookPath(p)
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

func lookPathIn(file, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", file, path)
}

// testHookBeforeStop, if set, is called with each job's daemon after the
// image is exported and before the daemon is stopped.
var testHookBeforeStop func(d *Daemon)

// Build starts a daemon for req, builds req against it with the docker
// CLI, exports the image to req.OutputDir and destroys the daemon.
func (r *Runner) Build(ctx context.Context, req *builder.Request, log io.Writer) (img v1.Image, err error) {
	dir := filepath.Join(req.Workspace, "dind")
	if _, err := os.Lstat(dir); err == nil {
		// Left by an earlier attempt of the same job.
		if err := cleanupDir(dir); err != nil {
			return nil, fmt.Errorf("dind: cleaning up an earlier daemon: %w", err)
		}
	}
	network := req.Network
	if network == "" {
		network = r.o.network
	}
	if err := network.Check(); err != nil {
		return nil, fmt.Errorf("dind runner: %w", err)
	}
	bases, err := readBases(req.BaseImages)
	if err != nil {
		return nil, fmt.Errorf("dind: %w", err)
	}
	started := time.Now()
	dcfg := DaemonConfig{
		InsecureRegistries: req.InsecureRegistries,
		ExtraCAs:           req.ExtraCAs,
		Tag:                req.ID,
		Network:            network,
		DigestRefs:         digestRefs(bases),
	}
	d, err := r.StartDaemon(ctx, dir, dcfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	// Before Build returns, whatever the outcome, the daemon and all of its
	// processes are gone and nothing stays mounted; its files (the data
	// root) are left for the Manager, which removes the workspace through
	// RemoveAll after the build is reported.
	defer func() {
		if serr := d.Halt(); serr != nil && err == nil {
			img, err = nil, fmt.Errorf("dind: stopping the job's daemon: %w", serr)
		}
	}()
	where := "on disk"
	if r.o.tmpfs > 0 {
		where = fmt.Sprintf("on a %d MiB tmpfs", r.o.tmpfs>>20)
	}
	fmt.Fprintf(log, "dind: job daemon ready in %.2fs (storage driver %s, data root %s, network %s)\n", time.Since(started).Seconds(), d.StorageDriver(), where, network)
	if len(bases) > 0 {
		loaded := time.Now()
		if _, err := d.LoadImages(ctx, req.BaseImages); err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, err
		}
		fmt.Fprintf(log, "dind: %d base images loaded in %.2fs\n", len(bases), time.Since(loaded).Seconds())
	}

	// The final base's layers are checked (decompressed) while the
	// build runs, for the export to keep them as they are.
	type verified struct {
		layers []baseLayer
		err    error
	}
	vctx, cancelVerify := context.WithCancel(ctx)
	defer cancelVerify()
	baseCh := make(chan verified, 1)
	go func() {
		l, err := verifyBase(vctx, req.BaseImages)
		baseCh <- verified{l, err}
	}()

	tag := "buildgw/job:" + tagName(req.ID)
	if err := r.dockerBuild(ctx, d, req, tag, log); err != nil {
		return nil, err
	}
	exported := time.Now()
	reuse := baseReuse{skip: true}
	if v := <-baseCh; v.err != nil {
		// Only the reuse is lost: the export compresses every layer.
		fmt.Fprintf(log, "dind: base layers not reused: %v\n", v.err)
	} else if len(v.layers) > 0 {
		reuse.layout, reuse.layers = req.BaseImages.Layout, v.layers
	}
	img, st, err := d.exportLayout(ctx, tag, req.OutputDir, reuse)
	if errors.Is(err, errRecompress) {
		fmt.Fprintf(log, "dind: a layer of a base layer's size is not the base's: exporting again, compressing every layer\n")
		if err := clearDir(req.OutputDir); err != nil {
			return nil, fmt.Errorf("dind: clearing the output layout: %w", err)
		}
		reuse.skip = false
		img, st, err = d.exportLayout(ctx, tag, req.OutputDir, reuse)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	fmt.Fprintf(log, "dind: image exported in %.2fs (%d layers, %d of them the base's as they are, %.1f MiB, %.1f MiB compressed)\n",
		time.Since(exported).Seconds(), st.layers, st.reused, float64(st.raw)/(1<<20), float64(st.compressed)/(1<<20))
	if testHookBeforeStop != nil {
		testHookBeforeStop(d)
	}
	iid, err := os.ReadFile(filepath.Join(d.dir, runDir, "iid"))
	if err != nil {
		return nil, fmt.Errorf("dind: reading the built image's ID: %w", err)
	}
	stopped := time.Now()
	if err := d.Halt(); err != nil {
		return nil, fmt.Errorf("dind: stopping the job's daemon: %w", err)
	}
	fmt.Fprintf(log, "dind: job daemon stopped in %.2fs\n", time.Since(stopped).Seconds())
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	if want := strings.TrimSpace(string(iid)); st.id.String() != want {
		return nil, fmt.Errorf("dind: exported image %s, want the built %s", st.id, want)
	}
	return img, nil
}

// dockerBuild runs docker build, or buildx build, against d, streaming
// its output to log.
func (r *Runner) dockerBuild(ctx context.Context, d *Daemon, req *builder.Request, tag string, log io.Writer) error {
	// No credential at all: base images are loaded from the gateway's
	// store, and the daemon never pulls.
	if err := os.WriteFile(filepath.Join(d.dir, clientDir, "config.json"), []byte("{}\n"), 0o600); err != nil {
		return fmt.Errorf("dind: writing the CLI's configuration: %w", err)
	}
	bin, args, env := r.buildCommand(d, req, tag)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = filepath.Join(d.dir, homeDir)
	cmd.Env = env
	lw := builder.NewLineWriter(stepDigests{log})
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// Stop the daemon at once too, rather than after the CLI.
		go d.kill()
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	// A full tmpfs data root shows in a build's output in many ways ("I/O
	// error", say), and the failed step's container, with what filled it,
	// is gone by the time the CLI exits: watch the free space meanwhile.
	var full atomic.Bool
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if r.o.tmpfs == 0 {
			return
		}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for !full.Load() {
			select {
			case <-stopWatch:
				return
			case <-t.C:
				full.Store(d.dataRootFull())
			}
		}
	}()
	err := cmd.Run()
	close(stopWatch)
	<-watched
	lw.Flush()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if full.Load() {
				return fmt.Errorf("%s failed (exit status %d): no space left in the job's data root, a tmpfs of %d MiB (runners.dind.tmpfs_bytes); see the build log", r.client(), ee.ExitCode(), r.o.tmpfs>>20)
			}
			return fmt.Errorf("%s failed (exit status %d); see the build log", r.client(), ee.ExitCode())
		}
		return fmt.Errorf("dind: running %s: %w", r.client(), err)
	}
	return nil
}

// client names what runs the build, for errors.
func (r *Runner) client() string {
	if r.o.buildx != "" {
		return "buildx build"
	}
	return "docker build"
}

// buildCommand returns the command that builds req against d, the docker
// CLI's or buildx's, and its whole environment: nothing of the gateway's,
// no credential (DOCKER_CONFIG holds an empty config.json), no variable
// that could name another daemon or builder.
func (r *Runner) buildCommand(d *Daemon, req *builder.Request, tag string) (bin string, args, env []string) {
	env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(d.dir, homeDir),
		"DOCKER_CONFIG=" + filepath.Join(d.dir, clientDir),
	}
	if r.o.buildx == "" {
		return r.o.docker, r.buildArgs(d, req, tag), append(env, "DOCKER_BUILDKIT=1")
	}
	// buildx has no --host: the job's daemon is the endpoint of the
	// "default" context, whose builder is the docker driver (the
	// daemon's own BuildKit), named on the command line so that no
	// stored builder is ever chosen. Attestations need an image store
	// the docker driver lacks: none are asked for.
	return r.o.buildx, r.buildxArgs(d, req, tag), append(env,
		"DOCKER_HOST=unix://"+d.Socket(),
		"BUILDX_NO_DEFAULT_ATTESTATIONS=1",
	)
}

// buildArgs are the docker CLI's arguments.
func (r *Runner) buildArgs(d *Daemon, req *builder.Request, tag string) []string {
	return append([]string{"--host=unix://" + d.Socket(), "build"}, r.commonArgs(d, req, tag)...)
}

// buildxArgs are buildx's arguments: the CLI's, plus the builder and the
// image going into the daemon's image store (as docker build puts it,
// for the export), without attestations.
func (r *Runner) buildxArgs(d *Daemon, req *builder.Request, tag string) []string {
	return append([]string{"build", "--builder=default", "--load", "--provenance=false", "--sbom=false"}, r.commonArgs(d, req, tag)...)
}

// commonArgs are the build's arguments that the docker CLI and buildx
// share.
func (r *Runner) commonArgs(d *Daemon, req *builder.Request, tag string) []string {
	args := []string{
		"--file=" + filepath.Join(req.ContextDir, filepath.FromSlash(req.Dockerfile)),
		"--tag=" + tag,
		"--iidfile=" + filepath.Join(d.dir, runDir, "iid"),
		"--progress=plain",
		// RUN containers share the daemon's network namespace: loopback
		// only, or the job's egress; never the gateway host's.
		"--network=host",
		// Base images are in the daemon already.
		"--pull=false",
	}
	for _, k := range slices.Sorted(maps.Keys(req.BuildArgs)) {
		args = append(args, "--build-arg="+k+"="+req.BuildArgs[k])
	}
	for _, k := range slices.Sorted(maps.Keys(req.Labels)) {
		args = append(args, "--label="+k+"="+req.Labels[k])
	}
	if req.Target != "" {
		args = append(args, "--target="+req.Target)
	}
	return append(args, req.ContextDir)
}

// RemoveAll removes dir, a job's workspace, with the files its daemon
// left (the data root: thousands of files, unlinked by several workers),
// after making sure that no process, cgroup or mount of the daemon is left
// (see Reap).
func (r *Runner) RemoveAll(ctx context.Context, dir string) error {
	var errs []error
	if _, err := os.Lstat(filepath.Join(dir, "dind")); err == nil {
		errs = append(errs, cleanupDir(filepath.Join(dir, "dind")))
	}
	errs = append(errs, hostfs.UnmountUnder(dir), os.RemoveAll(dir))
	return errors.Join(errs...)
}

// Reap finds the daemons a killed gateway left in workspaces under dirs
// (the directories that hold workspaces, each workspace's daemon in its
// subdirectory dind), kills them and every process of them, removes their
// cgroups and mounts, and deletes their state (builder.Reaper). The
// Manager calls it once at start-up, before any job runs. It returns the
// daemon directories it cleaned.
//
// A gateway that dies takes its daemons with it (Pdeathsig kills each
// namespace's init), so what is usually left is state; Reap also finds
// daemons by their state files (namespace init pid and start time) and by
// command lines naming a job's dind directory.
func (r *Runner) Reap(ctx context.Context, dirs []string) ([]string, error) {
	var parents []string
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		parents = append(parents, abs)
	}
	found := map[string]bool{}
	// Workspaces trashed but not removed yet hold no process or mount any
	// more, but are cleaned all the same.
	for _, parent := range parents {
		if m, err := filepath.Glob(filepath.Join(parent, "*", "dind")); err == nil {
			for _, d := range m {
				found[d] = true
			}
		}
	}
	// Processes whose directory is gone already.
	procs, _ := hostfs.Procs()
	for _, p := range procs {
		for _, a := range p.Args() {
			for _, parent := range parents {
				i := strings.Index(a, parent+"/")
				if i < 0 {
					continue
				}
				id, after, ok := strings.Cut(a[i+len(parent)+1:], "/")
				if ok && id != "" && (after == "dind" || strings.HasPrefix(after, "dind/")) {
					found[filepath.Join(parent, id, "dind")] = true
				}
			}
		}
	}
	var cleaned []string
	var errs []error
	for d := range found {
		if err := cleanupDir(d); err != nil {
			errs = append(errs, err)
		}
		cleaned = append(cleaned, d)
	}
	sort.Strings(cleaned)
	return cleaned, errors.Join(errs...)
}

// storageDriver returns the configured storage driver, or probes (once)
// whether overlay mounts work in dir.
func (r *Runner) storageDriver(dir string) string {
	if r.o.storage != "" {
		return r.o.storage
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.driver == "" {
		r.driver = "vfs"
		if probeOverlay(filepath.Join(dir, "overlay-probe")) == nil {
			r.driver = "overlay2"
		}
	}
	return r.driver
}

// probeOverlay mounts an overlay in dir (created and removed here) and
// checks that it shows the lower layer.
func probeOverlay(dir string) error {
	defer func() {
		syscall.Unmount(filepath.Join(dir, "merged"), syscall.MNT_DETACH)
		os.RemoveAll(dir)
	}()
	for _, d := range []string{"", "lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "lower", "probe"), []byte("x"), 0o600); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", filepath.Join(dir, "merged"), "overlay", 0, opts); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "merged", "probe")); err != nil {
		return err
	}
	return nil
}

// tagName makes a job ID a valid, lower-case image tag.
func tagName(id string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(id) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' {
			b.WriteRune(c)
		}
		if b.Len() >= 120 {
			break
		}
	}
	if b.Len() == 0 || b.String()[0] == '.' || b.String()[0] == '-' {
		return "job" + b.String()
	}
	return b.String()
}

// Package kaniko runs builds with the kaniko executor, rootless: each job
// gets its own user, mount and pid namespaces (entered with unshare and the
// full subordinate uid/gid range), and a private root holding only the
// executor, CA certificates, the read-only context and the output
// directory. The gateway fetches base images (builder.BasePreparer) and the
// executor reads them from a read-only layout instead of a registry; kaniko
// writes an OCI layout and never pushes, so no registry credential of any
// kind exists inside the sandbox.
package kaniko

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/ocilayout"
	"github.com/buildgw/buildgw/runners/cgroup"
	"github.com/buildgw/buildgw/sandbox"
)

// Runner is the rootless kaniko runner.
type Runner struct {
	o options
	// cred is the sandbox user when the gateway runs as root; nil when the
	// sandbox runs as the gateway's own user.
	cred *syscall.Credential
	// cg makes the sandboxes' cgroups; nil without limits.
	cg *cgroup.Manager
	// results is the whole-build result cache; nil without one.
	results *results
	// layers bounds the tenants' layer caches; nil without them.
	layers *layerCaches
	// bindExecutor: the sandbox gets the gateway's executor bound in,
	// not a link or copy of it in the job root (see sandbox.Root).
	bindExecutor bool
	// running holds the *sandboxProcs of the builds running, by job ID.
	running sync.Map
}

var (
	_ builder.Runner  = (*Runner)(nil)
	_ builder.Checker = (*Runner)(nil)
	_ builder.Remover = (*Runner)(nil)
	_ builder.Cleaner = (*Runner)(nil)
)

// ErrNoCgroups is returned by New when limits are asked for on a host (or
// as a user) where the runner cannot make cgroups.
var ErrNoCgroups = errors.New("kaniko runner: memory and pids limits need writable cgroups")

// cgroupParent holds every sandbox's cgroup, named after its job.
const cgroupParent = "buildgw-kaniko"

// New returns a Runner. It checks the executor, unshare and the sandbox
// user once, so a misconfigured host fails at start-up.
func New(opts ...Option) (*Runner, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	r := &Runner{o: o}
	var exe string
	if o.cacheDir != "" || o.resultDir != "" {
		if exe, err = fileDigest(o.executor); err != nil {
			return nil, err
		}
	}
	if o.cacheDir != "" {
		r.layers = &layerCaches{dir: o.cacheDir, maxBytes: o.cacheMax, workspaceMax: o.workspaceMax, exe: exe}
		r.layers.sweep()
	}
	if o.resultDir != "" {
		if r.results, err = newResults(o.resultDir, o.resultMax, exe); err != nil {
			return nil, err
		}
	}
	if o.limits != (cgroup.Limits{}) {
		r.cg = cgroup.New(o.cgroups, cgroupParent)
		if r.cg.Version() == cgroup.None {
			return nil, fmt.Errorf("%w: %s has neither v1 nor v2", ErrNoCgroups, o.cgroups)
		}
		// Find out now, not on the first build, whether groups can be made.
		g, err := r.cg.Create(fmt.Sprintf("probe-%d", os.Getpid()), o.limits)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoCgroups, err)
		}
		if err := g.Remove(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoCgroups, err)
		}
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(o.user)
		if err != nil {
			return nil, fmt.Errorf("looking up sandbox user %q (create it with subordinate uid and gid ranges): %w", o.user, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if uid == 0 {
			return nil, fmt.Errorf("sandbox user %q must not be root", o.user)
		}
		r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		r.bindExecutor = ExecutableBy(o.executor, uid, gid)
	}
	return r, nil
}

// Owner returns the uid and gid the sandbox runs as on the host, and
// whether that differs from the gateway's own user (so workspaces must be
// handed over).
func (r *Runner) Owner() (uid, gid int, differs bool) {
	if r.cred == nil {
		return os.Getuid(), os.Getgid(), false
	}
	return int(r.cred.Uid), int(r.cred.Gid), true
}

// PredefinedArgsPlatform returns the platform the executor builds on and
// for, the one it runs on: it predefines BuildKit's global ARGs (TARGETOS,
// TARGETSTAGE...) with it (third_party/kaniko patch 0013), so the
// gateway's Dockerfile analysis resolves FROM with the same values.
func (r *Runner) PredefinedArgsPlatform() v1.Platform {
	p := platforms.Normalize(platforms.DefaultSpec())
	return v1.Platform{OS: p.OS, OSVersion: p.OSVersion, Architecture: p.Architecture, Variant: p.Variant}
}

// Available checks that the sandbox can be entered on this host.
func (r *Runner) Available(ctx context.Context) error {
	if _, err := os.Stat(r.o.executor); err != nil {
		return fmt.Errorf("kaniko executor: %w", err)
	}
	if err := checkStatic(r.o.executor); err != nil {
		return err
	}
	if _, err := exec.LookPath(r.o.unshare); err != nil {
		return fmt.Errorf("unshare (util-linux) not found: %w", err)
	}
	for _, b := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s (package uidmap) not found: %w", b, err)
		}
	}
	if r.o.network == netmode.Egress {
		for _, b := range []string{r.o.slirp, r.o.nsenter, r.o.iptables + "-restore"} {
			if _, err := exec.LookPath(b); err != nil {
				return fmt.Errorf("%s, needed for network egress, not found (packages slirp4netns, util-linux, iptables): %w", b, err)
			}
		}
	}
	return nil
}

// Build runs kaniko for req in a fresh sandbox under req.Workspace.
func (r *Runner) Build(ctx context.Context, req *builder.Request, log io.Writer) (v1.Image, error) {
	jr := r.jobRoot(req)
	if err := jr.Prepare(); err != nil {
		return nil, err
	}
	root := jr.Dir
	// The job root stays for the Manager to remove with the rest of the
	// workspace, after the build is reported: unlinking an unpacked base
	// image takes about a second.

	network := req.Network
	if network == "" {
		network = r.o.network
	}
	if err := network.Check(); err != nil {
		return nil, fmt.Errorf("kaniko runner: %w", err)
	}
	kargs := r.kanikoArgs(req)
	resultKey, img := r.cachedResult(ctx, req, kargs, network, log)
	if img != nil {
		return img, nil
	}
	// A network namespace of its own: loopback only, unless egress is
	// added below. IPC and UTS of its own: SysV IPC objects die with the
	// build and are never shared with the host or other builds, and the
	// host's name stays hidden (the sandbox sets its own).
	args := append([]string{
		"--user", "--map-root-user", "--map-auto", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child",
		"--", jr.Start(),
	}, kargs...)
	var grp *cgroup.Group
	var holdR, release *os.File
	var holdProg string
	var err error
	var cache *jobCache
	if !req.NoCache && req.Tenant != "" && r.layers != nil {
		if cache, err = r.prepareCache(ctx, req, log); err != nil {
			return nil, err
		}
		defer func() {
			if err := r.layers.leave(cache.tenantDir); err != nil {
				fmt.Fprintf(log, "buildgw: bounding the layer caches: %v\n", err)
			}
		}()
		args = append(args, "--cache=true", "--cache-repo="+cacheRepo)
	}
	cmd := exec.CommandContext(ctx, r.o.unshare, args...)
	if r.cg != nil {
		var err error
		if grp, err = r.cg.Create(req.ID, r.o.limits); err != nil {
			return nil, fmt.Errorf("limiting the sandbox: %w", err)
		}
		// Kills whatever of the build is left, and frees the group.
		defer func() {
			if err := grp.Remove(); err != nil {
				fmt.Fprintf(log, "buildgw: tearing down the sandbox: %v\n", err)
			}
		}()
		if holdProg, err = exec.LookPath(r.o.unshare); err != nil {
			return nil, fmt.Errorf("unshare: %w", err)
		}
		// The executor holds until it is in the group, then becomes
		// unshare: nothing of the build ever runs outside the group.
		cmd = exec.CommandContext(ctx, jr.Start(), args...)
		if holdR, release, err = os.Pipe(); err != nil {
			return nil, err
		}
		defer holdR.Close()
		defer release.Close()
	}
	cmd.Dir = root
	// The sandbox gets a fixed environment, never the gateway's, which may
	// hold secrets.
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"DOCKER_CONFIG=" + sandbox.DockerConfig,
		"SSL_CERT_DIR=" + sandbox.CertDir,
		sandbox.EnvRoot + "=" + root,
		sandbox.EnvContext + "=" + req.ContextDir,
		sandbox.EnvOutput + "=" + req.OutputDir,
	}
	if grp != nil {
		cmd.Env = append(cmd.Env, sandbox.EnvHold+"="+holdProg)
	}
	if r.bindExecutor {
		cmd.Env = append(cmd.Env, sandbox.EnvExecutor+"="+r.o.executor)
	}
	// Images come only from what the gateway fetched; without any, an
	// empty directory, so that a FROM fails saying so.
	base := jr.Path(sandbox.BaseImages)
	if req.BaseImages != nil {
		base = req.BaseImages.Layout
	}
	cmd.Env = append(cmd.Env, sandbox.EnvBase+"="+base)
	if cache != nil {
		cmd.Env = append(cmd.Env, sandbox.EnvCache+"="+cache.dir)
		if cache.bind {
			cmd.Env = append(cmd.Env, sandbox.EnvSharedCache+"="+cache.tenantDir)
		}
	}
	chown := &chownHint{}
	lw := builder.NewLineWriter(io.MultiWriter(log, chown))
	cmd.Stdout, cmd.Stderr = lw, lw
	// A session of its own: no controlling terminal reaches the build
	// through /dev/tty, and the whole group can be killed at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL, Credential: r.cred}
	// Killing the namespace's init kills every process of the build, and
	// unshare returns once they are all gone (see sandboxKill).
	sk := newSandboxKill()
	cmd.Cancel = func() error { return sk.kill(cmd.Process.Pid) }
	cmd.WaitDelay = 10 * time.Second

	cmd.Env = append(cmd.Env, sandbox.EnvNetwork+"="+string(network))
	var eg *sandboxEgress
	if network == netmode.Egress {
		if eg, err = newEgress(); err != nil {
			return nil, fmt.Errorf("preparing the sandbox's network: %w", err)
		}
		defer eg.stop()
	}
	// The egress handshake and the cgroup hold, at the descriptors the
	// sandbox init reads them from.
	handed := map[sandbox.FD]*os.File{}
	if eg != nil {
		handed[sandbox.InNamespace], handed[sandbox.NetworkReady] = eg.inNSW, eg.readyR
	}
	if grp != nil {
		handed[sandbox.Release] = holdR
	}
	if cmd.ExtraFiles, err = sandbox.ExtraFiles(handed); err != nil {
		return nil, err
	}
	err = cmd.Start()
	if err == nil {
		defer func() {
			if err := sk.wait(initWait); err != nil {
				fmt.Fprintf(log, "buildgw: %v\n", err)
			}
		}()
	}
	if err == nil && r.o.nice > 0 {
		// The whole group: the process and whatever it has forked by now;
		// later processes inherit it.
		if perr := unix.Setpriority(unix.PRIO_PGRP, cmd.Process.Pid, r.o.nice); perr != nil {
			fmt.Fprintf(lw, "buildgw: lowering the sandbox's priority: %v\n", perr)
		}
	}
	if err == nil && grp != nil {
		holdR.Close()
		if err = grp.Add(cmd.Process.Pid); err == nil {
			_, err = release.Write([]byte{1})
		}
		release.Close()
		if err != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			return nil, fmt.Errorf("starting the sandbox in its cgroup: %w", err)
		}
	}
	if err == nil {
		untrack, err := r.track(req.ID, cmd.Process.Pid, grp)
		if err != nil {
			cmd.Cancel()
			cmd.Wait()
			lw.Flush()
			return nil, err
		}
		defer untrack()
	}
	if err == nil && eg != nil {
		if err = eg.start(ctx, r, cmd.Process.Pid); err != nil {
			cmd.Cancel()
			cmd.Wait()
			lw.Flush()
			return nil, err
		}
	}
	if err == nil {
		err = cmd.Wait()
	}
	lw.Flush()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	if err != nil {
		var ee *exec.ExitError
		if grp != nil {
			switch grp.Exceeded() {
			case "memory":
				if inMemory(req.Workspace) {
					return nil, fmt.Errorf("the build ran out of memory (limit %d MiB, which counts the files it writes: its workspace is in memory); see the build log", r.o.limits.MemoryBytes>>20)
				}
				return nil, fmt.Errorf("the build ran out of memory (limit %d MiB); see the build log", r.o.limits.MemoryBytes>>20)
			case "pids":
				return nil, fmt.Errorf("the build reached its process limit (%d); see the build log", r.o.limits.Pids)
			}
		}
		if errors.As(err, &ee) && chown.Seen() {
			return nil, r.idRangeError(ee.ExitCode())
		}
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("kaniko failed (exit status %d); see the build log", ee.ExitCode())
		}
		return nil, fmt.Errorf("starting kaniko sandbox: %w", err)
	}
	img, err = readLayout(ctx, req.OutputDir)
	if err != nil {
		return nil, err
	}
	if cache != nil {
		r.importCache(ctx, cache, log)
	}
	if resultKey != "" {
		// A cache that cannot be filled costs the next build time, never
		// this one its image.
		if err := r.results.store(ctx, req.Tenant, resultKey, img); err != nil {
			fmt.Fprintf(log, "buildgw: keeping the result for identical rebuilds: %v\n", err)
		}
	}
	return img, nil
}

// cachedResult returns the key of req's result, and the image of an
// identical earlier build of its tenant if there is one. A result cache
// that cannot answer never fails the build: kaniko runs.
func (r *Runner) cachedResult(ctx context.Context, req *builder.Request, kargs []string, network netmode.Mode, log io.Writer) (string, v1.Image) {
	if r.results == nil || req.Tenant == "" || req.NoCache {
		return "", nil
	}
	key, err := r.results.key(req, kargs, network)
	if err != nil {
		fmt.Fprintf(log, "buildgw: not using cached results: %v\n", err)
		return "", nil
	}
	if key == "" {
		return "", nil
	}
	cached := filepath.Join(req.Workspace, "cached-result")
	ok, err := r.results.load(req.Tenant, key, cached)
	var img v1.Image
	if err == nil && ok {
		img, err = readLayout(ctx, cached)
	}
	if err != nil {
		fmt.Fprintf(log, "buildgw: not using the cached result: %v\n", err)
		if derr := r.results.drop(req.Tenant, key); derr != nil {
			fmt.Fprintf(log, "buildgw: removing the cached result: %v\n", derr)
		}
		return key, nil
	}
	if img != nil {
		fmt.Fprintf(log, "buildgw: every step cached (result of an identical earlier build, key %s), kaniko not run\n", key[:16])
	}
	return key, img
}

// Cleanup removes the cgroup of job id, left by a gateway that died while
// the job ran, and kills anything still in it.
func (r *Runner) Cleanup(ctx context.Context, id string) error {
	if r.cg == nil {
		return nil
	}
	g, err := r.cg.Create(id, cgroup.Limits{})
	if err != nil {
		return err
	}
	return g.Remove()
}

// jobCache is a build's view of its tenant's layer cache.
type jobCache struct {
	// tenantDir is the tenant's shared cache, the gateway's.
	tenantDir string
	// dir is the build's own cache directory, in its workspace, the
	// sandbox's kaniko's --cache-repo.
	dir string
	// bind: the sandbox gets tenantDir bound read-only and dir links into
	// it, rather than copies.
	bind bool
}

// prepareCache makes the build's cache directory in its workspace and
// fills it from its tenant's shared cache (see layerCaches), marking the
// shared cache in use until the caller leaves it.
func (r *Runner) prepareCache(ctx context.Context, req *builder.Request, log io.Writer) (*jobCache, error) {
	td, err := r.layers.tenantDir(req.Tenant)
	if err != nil {
		return nil, err
	}
	c := &jobCache{tenantDir: td, dir: filepath.Join(req.Workspace, "layer-cache"), bind: r.cred != nil}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("preparing the layer cache: %w", err)
	}
	r.layers.enter(td)
	start := time.Now()
	n, err := r.layers.populate(ctx, td, c.dir, !c.bind)
	if err == nil {
		err = r.chown(c.dir)
	}
	if err != nil {
		if lerr := r.layers.leave(td); lerr != nil {
			fmt.Fprintf(log, "buildgw: bounding the layer caches: %v\n", lerr)
		}
		return nil, err
	}
	how := "linked"
	if !c.bind {
		how = "copied"
	}
	fmt.Fprintf(log, "buildgw: layer cache: %d entries %s in %s\n", n, how, time.Since(start).Round(time.Millisecond))
	return c, nil
}

// importCache takes the entries the build added to its cache directory
// into its tenant's shared cache, checked. A cache that cannot be filled
// costs the next build time, never this one its image. ctx is the
// build's: the import ends with the job's deadline.
func (r *Runner) importCache(ctx context.Context, c *jobCache, log io.Writer) {
	start := time.Now()
	n, refused, err := r.layers.importNew(ctx, c.tenantDir, c.dir)
	if err != nil {
		fmt.Fprintf(log, "buildgw: keeping cached layers: %v\n", err)
		return
	}
	for _, e := range refused {
		fmt.Fprintf(log, "buildgw: layer cache entry refused: %v\n", e)
	}
	if n > 0 {
		fmt.Fprintf(log, "buildgw: layer cache: %d new entries kept in %s\n", n, time.Since(start).Round(time.Millisecond))
	}
}

// jobRoot returns the layout of req's job root, under its workspace. No
// registry credential of any kind goes in: the executor takes base images
// only from req.BaseImages, fetched by the gateway.
func (r *Runner) jobRoot(req *builder.Request) sandbox.Root {
	return sandbox.Root{
		Dir:          sandbox.RootIn(req.Workspace),
		Owner:        r.cred,
		Executor:     r.o.executor,
		BindExecutor: r.bindExecutor,
		SystemCAs:    r.o.caCerts,
		ExtraCAs:     req.ExtraCAs,
	}
}

// ExecutableBy reports whether uid (with primary group gid and no other)
// may execute the file at path: search permission on every directory on
// the way and execute permission on the file, by the mode bits.
func ExecutableBy(path string, uid, gid int) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for p := abs; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return false
		}
		perm := st.Mode & 0o7
		switch {
		case int(st.Uid) == uid:
			perm = st.Mode >> 6 & 0o7
		case int(st.Gid) == gid:
			perm = st.Mode >> 3 & 0o7
		}
		if perm&1 == 0 {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

func (r *Runner) chown(p string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Lchown(p, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to the sandbox user: %w", p, err)
	}
	return nil
}

func (r *Runner) kanikoArgs(req *builder.Request) []string {
	return append(ExecutorArgs(req), r.o.flags...)
}

// ExecutorArgs are kaniko's arguments for req, with the sandbox's paths
// (package sandbox): what every runner that runs this repository's
// executor passes it.
func ExecutorArgs(req *builder.Request) []string {
	args := []string{
		"--context=dir://" + sandbox.Workspace,
		"--dockerfile=" + path.Join(sandbox.Workspace, req.Dockerfile),
		"--no-push",
		"--oci-layout-path=" + sandbox.Output,
		// kaniko refuses to run outside a container it recognises; the
		// sandbox's namespaces are one.
		"--force",
		"--log-format=text",
		"--log-timestamp=false",
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
	for _, reg := range req.InsecureRegistries {
		args = append(args, "--insecure-registry="+reg)
	}
	return args
}

// RemoveAll removes dir, which may hold files owned by the sandbox's
// subordinate uids. Root removes them directly; any other gateway user
// removes them from inside a user namespace where it owns them.
func (r *Runner) RemoveAll(ctx context.Context, dir string) error {
	if os.Geteuid() == 0 {
		return os.RemoveAll(dir)
	}
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, r.o.unshare, "--user", "--map-root-user", "--map-auto", "--", r.o.executor)
	cmd.Env = []string{sandbox.EnvRemove + "=" + dir}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("removing %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// readLayout returns the one image kaniko wrote, read without trusting
// anything a build step may have planted in the output directory.
func readLayout(ctx context.Context, dir string) (v1.Image, error) {
	img, err := ocilayout.Image(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("reading kaniko's output: %w", err)
	}
	return img, nil
}

// inMemory reports whether dir is on a tmpfs, where the files a build
// writes are charged to its memory.
func inMemory(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

package dind

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/cgroup"
	"github.com/buildgw/buildgw/runners/egress"
	"github.com/buildgw/buildgw/sandbox"
	"github.com/buildgw/buildgw/sandbox/sockfilter"
)

// DaemonConfig is what a per-job daemon is started with.
type DaemonConfig struct {
	// InsecureRegistries are passed as --insecure-registry.
	InsecureRegistries []string
	// ExtraCAs are PEM roots the daemon trusts, besides the system's, when
	// it pulls base images (see the package documentation).
	ExtraCAs []byte
	// Tag names the daemon's state for the cgroup of its containers; the
	// job's ID. Optional.
	Tag string
	// Network is the daemon's network namespace: netmode.None (loopback
	// only; the default) or netmode.Egress (slirp4netns, the gateway's host
	// and link-local addresses refused). Its RUN containers share it.
	// NetworkHost keeps the daemon in the caller's network namespace: for
	// benchmarks and tests that stand for a host's daemon, never for jobs.
	Network netmode.Mode
	// DigestRefs are references by digest (name@sha256:...) and the IDs
	// of the images they name, which the daemon knows from its start:
	// docker load only tags, so images loaded later (LoadImages) are found
	// by digest this way. See the package documentation.
	DigestRefs map[string]string
}

// Daemon is one running per-job dockerd: pid 1 of a pid namespace of its
// own (its init, or dockerd itself), in a mount namespace of its own, with
// all of its state under one directory.
type Daemon struct {
	dir     string
	driver  string
	cgroup  string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	pid     int
	client  *http.Client
	stop    time.Duration
	net     *egress.Network

	stopOnce sync.Once
	stopErr  error
}

// NetworkHost is DaemonConfig.Network for a daemon in the caller's own
// network namespace. Build never uses it.
const NetworkHost netmode.Mode = "host"

// execRoot is the daemon's --exec-root (containerd's state and sockets
// too): the private tmpfs initScript mounts over /run/docker, so that it
// vanishes with the namespace and its socket paths stay short whatever the
// state directory (containerd refuses socket paths over 104 bytes).
const execRoot = "/run/docker"

// The layout of a daemon's directory.
const (
	dataDir    = "data"   // --data-root
	runDir     = "run"    // the API socket and the pidfile
	etcDir     = "etc"    // daemon.json and the daemon's key
	homeDir    = "home"   // HOME of the daemon and the CLI
	clientDir  = "client" // DOCKER_CONFIG of the CLI
	certsDir   = "certs"  // CA bundle with Request.ExtraCAs
	refsFile   = "repositories.json"
	resolvFile = "resolv.conf"
	stateFile  = "state.json"
	logFile    = "dockerd.log"
	socketName = "docker.sock"
)

// maxSocketPath is the longest unix socket path Linux accepts (108 bytes
// with the NUL).
const maxSocketPath = 107

// state is what Reap needs to find a daemon left by a killed gateway.
type state struct {
	// Pid is the daemon namespace's init, as the host sees it, and Start
	// its start time (clock ticks after boot), so that a reused pid is
	// never mistaken for it.
	Pid    int    `json:"pid"`
	Start  uint64 `json:"start"`
	Cgroup string `json:"cgroup"`
}

// initScript runs as pid 1 of the daemon's new pid, mount and network
// namespaces (the mount namespace is private: Go marks / MS_REC|MS_PRIVATE
// after unsharing it). It mounts a /proc of the new pid namespace, hides
// the host's /run/docker and /run/containerd behind private tmpfs mounts
// (the daemon and its containerd put plugin and shim sockets there,
// whatever --exec-root says), mounts a tmpfs of the given size (bytes; ""
// for none) over the data root, installs the reference store the daemon
// starts with (if any), puts the job's resolv.conf over /etc/resolv.conf
// (BuildKit makes the RUN steps' from it), names its UTS namespace after
// the gateway, not the host, raises its OOM score to the highest, which
// everything the daemon starts inherits (the kernel's OOM killer picks a
// build before the gateway, whatever score the gateway was given), then
// becomes the init or dockerd. Every mount made in the namespace vanishes
// with it. With hold set, it first waits for a line on fd 3, sent once it
// is in the job's cgroup, so that nothing of the daemon runs outside it.
const initScript = `set -e
m=$1; size=$2; data=$3; refs=$4; refsdir=$5; resolv=$6; hold=$7; shift 7
if [ -n "$hold" ]; then read -r _ <&3; exec 3<&-; fi
echo 1000 > /proc/self/oom_score_adj
"$m" -t proc -o nosuid,nodev,noexec proc /proc
echo ` + sandboxHostname + ` > /proc/sys/kernel/hostname
"$m" -t tmpfs -o mode=0700,nosuid,nodev,size=64m tmpfs /run/docker
"$m" -t tmpfs -o mode=0700,nosuid,nodev,size=64m tmpfs /run/containerd
if [ -n "$size" ]; then "$m" -t tmpfs -o "mode=0700,size=$size" tmpfs "$data"; fi
"$m" --bind "$data" ` + dataRoot + `
if [ -n "$refs" ]; then mkdir -p -m 0700 "$refsdir"; cp "$refs" "$refsdir/repositories.json"; fi
if [ -n "$resolv" ] && [ -e /etc/resolv.conf ]; then "$m" --bind "$resolv" /etc/resolv.conf; fi
exec "$@"
`

// seccompFile, in etcDir, is the containers' seccomp profile.
const seccompFile = "seccomp.json"

// sandboxHostname is the host name of a job's daemon (its UTS namespace),
// as of the kaniko runner's sandboxes.
const sandboxHostname = "buildgw"

// RunHostname is the host name RUN steps see: BuildKit gives each RUN
// container a UTS namespace of its own with this name (Docker 20.10's
// BuildKit has no BUILDKIT_SANDBOX_HOSTNAME), never the gateway host's.
const RunHostname = "buildkitsandbox"

// hostMountPoints must exist on the host for initScript to mount over
// them; a Docker installation has them anyway.
var hostMountPoints = []string{"/run/docker", "/run/containerd"}

// dataRoot is where the daemon sees its data root (--data-root), the same
// for every job: initScript binds the job's there in the daemon's private
// mount namespace (the host keeps an empty directory). The daemon names it
// in the overlay options of its containers' mounts, which every RUN step
// reads in /proc/self/mountinfo, and the job's directory on the host is no
// business of a build's.
const dataRoot = "/var/lib/buildgw-dind"

// StartDaemon starts a daemon with its state in dir, which must not
// exist (its parent must), and waits until it answers. The daemon is
// killed when ctx ends before that. Stop it with Stop, which deletes dir.
func (r *Runner) StartDaemon(ctx context.Context, dir string, cfg DaemonConfig) (*Daemon, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if n := len(filepath.Join(dir, runDir, socketName)); n > maxSocketPath {
		return nil, fmt.Errorf("dind: job directory %s is too long for the daemon's unix sockets (%d bytes, limit %d)", dir, n, maxSocketPath)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dind: creating daemon directory: %w", err)
	}
	d := &Daemon{dir: dir, done: make(chan struct{}), stop: r.o.stopTimeout}
	ok := false
	defer func() {
		if !ok {
			d.kill()
			if d.cmd != nil && d.cmd.Process != nil {
				<-d.done
			}
			d.net.Stop()
			cleanupDir(dir)
		}
	}()
	for _, sub := range []string{dataDir, runDir, etcDir, homeDir, clientDir, certsDir} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("dind: preparing daemon directory: %w", err)
		}
	}
	for _, p := range append(hostMountPoints, dataRoot) {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("dind: creating mount point %s: %w", p, err)
		}
	}
	d.driver = r.storageDriver(dir)
	name := cgroupName(cfg.Tag)
	d.cgroup = r.o.cgroupRoot + "/" + name
	// Recorded before the group exists, so that every cleanup (the one
	// below on failure, Reap after a crash) removes it.
	if err := writeState(dir, state{Cgroup: d.cgroup}); err != nil {
		return nil, err
	}
	var daemonGroup *cgroup.Group
	var holdR, release *os.File
	if r.o.limits != (cgroup.Limits{}) {
		// The job's group, --cgroup-parent, holds the daemon and, below
		// it, every container, all counted against its limits. The
		// daemon is in a leaf of its own: cgroup v2 lets only a group
		// without processes pass controllers on to its children.
		l := r.o.limits
		if l.MemoryBytes > 0 {
			l.MemoryBytes += r.o.tmpfs
		}
		m := cgroup.New(r.o.cgroups, r.o.cgroupRoot)
		if _, err := m.Create(name, l); err != nil {
			return nil, fmt.Errorf("dind: limiting the job: %w", err)
		}
		if daemonGroup, err = m.Create(name+"/daemon", cgroup.Limits{}); err != nil {
			return nil, fmt.Errorf("dind: limiting the job: %w", err)
		}
		if holdR, release, err = os.Pipe(); err != nil {
			return nil, err
		}
		defer holdR.Close()
		defer release.Close()
	}

	// No host configuration: not /etc/docker/daemon.json, and the
	// daemon's identity key (20.10 writes /etc/docker/key.json unless told
	// otherwise) stays in the job's directory.
	conf, _ := json.Marshal(map[string]any{"deprecated-key-path": filepath.Join(dir, etcDir, "key.json")})
	if err := os.WriteFile(filepath.Join(dir, etcDir, "daemon.json"), conf, 0o600); err != nil {
		return nil, fmt.Errorf("dind: writing daemon configuration: %w", err)
	}
	profile, err := seccompProfile()
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, etcDir, seccompFile), profile, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("dind: writing the containers' seccomp profile: %w", err)
	}
	env := []string{
		"PATH=" + daemonPath(r.o.dockerd),
		"HOME=" + filepath.Join(dir, homeDir),
	}
	if len(cfg.ExtraCAs) > 0 {
		bundle := filepath.Join(dir, certsDir, "ca-certificates.crt")
		if err := sandbox.WriteCABundle(bundle, r.o.caCerts, cfg.ExtraCAs); err != nil {
			return nil, fmt.Errorf("dind: installing CA certificates: %w", err)
		}
		// Go's x509 reads the system roots from here instead; the
		// daemon's registry client uses the system roots for every
		// registry without an /etc/docker/certs.d entry.
		env = append(env, "SSL_CERT_FILE="+bundle)
	}

	size := ""
	if r.o.tmpfs > 0 {
		size = fmt.Sprint(r.o.tmpfs)
	}
	network := cfg.Network
	if network == "" {
		network = netmode.None
	}
	if network != NetworkHost {
		if err := network.Check(); err != nil {
			return nil, fmt.Errorf("dind: %w", err)
		}
	}
	// Names resolve through slirp4netns's DNS forwarder, never the host's
	// resolver (which may listen on the host's loopback).
	resolv := ""
	switch network {
	case netmode.None:
		resolv = filepath.Join(dir, etcDir, resolvFile)
		err = os.WriteFile(resolv, []byte("# no network\n"), 0o644)
	case netmode.Egress:
		resolv = filepath.Join(dir, etcDir, resolvFile)
		err = os.WriteFile(resolv, []byte("nameserver "+egress.DNS+"\n"), 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("dind: writing resolv.conf: %w", err)
	}
	refs := ""
	if len(cfg.DigestRefs) > 0 {
		refs = filepath.Join(dir, etcDir, refsFile)
		if err := os.WriteFile(refs, referenceStore(cfg.DigestRefs), 0o600); err != nil {
			return nil, fmt.Errorf("dind: writing the daemon's references: %w", err)
		}
	}
	// The daemon's reference store: data-root/image/DRIVER/repositories.json.
	refsDir := filepath.Join(dir, dataDir, "image", d.driver)
	hold := ""
	if daemonGroup != nil {
		hold = "1"
	}
	args := []string{r.o.sh, "-c", initScript, "dind-init", r.o.mount, size, filepath.Join(dir, dataDir),
		refs, refsDir, resolv, hold}
	if r.o.init != "" {
		args = append(args, r.o.init, "--")
	}
	args = append(args, r.o.dockerd)
	args = append(args, r.daemonArgs(dir, d.driver, d.cgroup, cfg.InsecureRegistries)...)

	logf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dind: %w", err)
	}
	defer logf.Close()
	// IPC and UTS namespaces of its own: SysV IPC objects of the daemon
	// and of RUN steps that share its namespaces die with it, and the
	// host's name stays hidden.
	cloneflags := uintptr(syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS)
	if network == NetworkHost {
		cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	}
	d.cmd = &exec.Cmd{
		Path:   r.o.sh,
		Args:   args,
		Env:    env,
		Dir:    filepath.Join(dir, homeDir),
		Stdout: logf,
		Stderr: logf,
		SysProcAttr: &syscall.SysProcAttr{
			// Its own session, so no terminal signal reaches it; pid 1
			// of a new pid namespace, so that killing it kills every
			// process of the daemon (containerd, shims, the build's
			// containers, all in that namespace or below); a private
			// mount namespace, so that every mount the daemon makes
			// (overlays, shm, netns) dies with it; a network namespace
			// of its own, which its RUN containers share (docker build
			// --network=host): loopback only, or egress below. Pdeathsig:
			// a gateway that dies takes the whole namespace with it.
			Setsid:       true,
			Pdeathsig:    syscall.SIGKILL,
			Cloneflags:   cloneflags,
			Unshareflags: syscall.CLONE_NEWNS,
		},
	}
	if holdR != nil {
		d.cmd.ExtraFiles = []*os.File{holdR} // fd 3
	}
	// The daemon is started from a thread of its own that carries the
	// socket filter (package sockfilter), which it and every process it
	// starts inherit: the RUN steps' containers, whichever builder made
	// them, cannot make packets of their own, whatever seccomp profile
	// the builder gives them (BuildKit's is containerd's default, which
	// allows packet sockets). The thread waits for the daemon, and then
	// goes back to the runtime, filter and all. It must not end: the
	// kernel sends a process its Pdeathsig when the thread that started
	// it ends, and this thread may have started others (a kaniko
	// sandbox's unshare, slirp4netns) before it was locked, which would
	// be killed with it. The filter refuses nothing the gateway uses
	// (packet and raw sockets but netlink, io_uring, x32, socketcall),
	// and whatever the thread starts later runs under it anyway.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := sockfilter.InstallThread(); err != nil {
			started <- fmt.Errorf("dind: %w", err)
			return
		}
		if err := d.cmd.Start(); err != nil {
			started <- fmt.Errorf("dind: starting dockerd: %w", err)
			return
		}
		started <- nil
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	d.pid = d.cmd.Process.Pid
	st := state{Pid: d.pid, Cgroup: d.cgroup}
	if p, err := hostfs.Lookup(d.pid); err == nil {
		st.Start = p.Start
	}
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	if daemonGroup != nil {
		holdR.Close()
		err := daemonGroup.Add(d.pid)
		if err == nil {
			_, err = release.Write([]byte("\n"))
		}
		release.Close()
		if err != nil {
			return nil, fmt.Errorf("dind: starting the daemon in the job's cgroup: %w", err)
		}
	}

	if network != NetworkHost {
		if err := loopbackUp(d.pid); err != nil {
			return nil, fmt.Errorf("dind: bringing up the daemon's loopback: %w", err)
		}
	}
	if network == netmode.Egress {
		// Started from this goroutine: in the caller's network namespace,
		// the gateway's host.
		if d.net, err = egress.Start(ctx, r.o.tools, d.pid, r.o.refuse); err != nil {
			return nil, fmt.Errorf("dind: %w", err)
		}
	}

	d.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket())
		},
		MaxIdleConns: 2,
	}}
	if err := d.waitReady(ctx, r.o.startTime); err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, fmt.Errorf("dind: %w\n%s", err, tail(filepath.Join(dir, logFile), 20))
	}
	ok = true
	return d, nil
}

// writeState records st in dir for Reap.
func writeState(dir string, st state) error {
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("dind: recording daemon state: %w", err)
	}
	return nil
}

func (r *Runner) daemonArgs(dir, driver, cgroup string, insecure []string) []string {
	args := []string{
		"--data-root=" + dataRoot,
		"--exec-root=" + execRoot,
		"--pidfile=" + filepath.Join(dir, runDir, "docker.pid"),
		"--host=unix://" + filepath.Join(dir, runDir, socketName),
		"--group=root",
		"--config-file=" + filepath.Join(dir, etcDir, "daemon.json"),
		// No bridge and no firewall or sysctl changes (the egress rules
		// in the daemon's namespace are the runner's); RUN steps use the
		// daemon's own network namespace (docker build --network=host).
		"--bridge=none",
		"--iptables=false",
		"--ip6tables=false",
		"--ip-masq=false",
		"--ip-forward=false",
		"--userland-proxy=false",
		"--storage-driver=" + driver,
		"--exec-opt=native.cgroupdriver=cgroupfs",
		"--cgroup-parent=" + cgroup,
		// Every container gets Docker's default seccomp profile without
		// packet and raw sockets or io_uring (see seccompProfile), and
		// an IPC namespace of its own.
		"--seccomp-profile=" + filepath.Join(dir, etcDir, seccompFile),
		"--default-ipc-mode=private",
	}
	for _, reg := range insecure {
		args = append(args, "--insecure-registry="+reg)
	}
	return args
}

// daemonPath is the PATH of a job's daemon, where it finds containerd and
// runc: dockerd's own directory first, then the system's.
func daemonPath(dockerd string) string {
	return filepath.Dir(dockerd) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// cgroupName is a unique, valid cgroup name for a job.
func cgroupName(tag string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(tag) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' {
			b.WriteRune(c)
		}
		if b.Len() >= 48 {
			break
		}
	}
	if b.Len() > 0 {
		b.WriteByte('-')
	}
	r := make([]byte, 6)
	rand.Read(r)
	b.WriteString(hex.EncodeToString(r))
	return b.String()
}

// waitReady polls /_ping until the daemon answers, it exits, ctx ends or
// timeout passes.
func (d *Daemon) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := d.ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("dockerd exited before it answered (%v)", d.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer within %s: %v", timeout, err)
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

func (d *Daemon) ping(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping: %s", resp.Status)
	}
	return nil
}

// Socket is the path of the daemon's API socket.
func (d *Daemon) Socket() string { return filepath.Join(d.dir, runDir, socketName) }

// Dir is the daemon's state directory.
func (d *Daemon) Dir() string { return d.dir }

// Pid is the host pid of the daemon namespace's pid 1.
func (d *Daemon) Pid() int { return d.pid }

// StorageDriver is the daemon's storage driver.
func (d *Daemon) StorageDriver() string { return d.driver }

// Get sends a GET for path (with query) to the daemon's API.
func (d *Daemon) Get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil, err
	}
	return d.client.Do(req)
}

// Stop kills the daemon and every process of it, removes its cgroups and
// mounts, and deletes its directory. It returns once all of that is
// done, or has failed; calling it again returns the same result.
func (d *Daemon) Stop() error {
	if err := d.Halt(); err != nil {
		return err
	}
	if err := removeTree(d.dir); err != nil {
		return fmt.Errorf("removing the daemon's state: %w", err)
	}
	return nil
}

// Halt is Stop but for deleting the directory: when it returns, every
// process of the daemon is gone, and its cgroups and mounts too, but its
// files stay (for builder.Remover, off the build's critical path).
// Calling it again returns the same result.
func (d *Daemon) Halt() error {
	d.stopOnce.Do(func() {
		if d.stop > 0 {
			d.terminate(d.stop)
		}
		d.kill()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			// The kernel kills a pid namespace's processes when its init
			// dies; only an unkillable (D state) process holds this up.
		}
		d.client.CloseIdleConnections()
		d.net.Stop()
		d.stopErr = haltDir(d.dir)
	})
	return d.stopErr
}

// terminate asks the daemon to shut down (the init passes SIGTERM on to
// dockerd) and waits up to grace.
func (d *Daemon) terminate(grace time.Duration) {
	if d.pid <= 0 {
		return
	}
	syscall.Kill(d.pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
	}
}

// kill sends SIGKILL to the namespace's init, which makes the kernel kill
// every other process in the namespace (and in the namespaces below it:
// the containers').
func (d *Daemon) kill() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
	default:
		d.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// cleanupDir makes sure nothing of a daemon whose state is in dir is left
// (see haltDir) and deletes dir.
func cleanupDir(dir string) error {
	err := haltDir(dir)
	if rerr := removeTree(dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("removing the daemon's state: %w", rerr))
	}
	return err
}

// haltDir makes sure no process, cgroup or mount of a daemon whose state
// is in dir is left: it kills the namespace's init recorded in dir's state
// file and every process whose command line names a path under dir (the
// daemon, containerd, the shims), waits for them to go, removes the job's
// cgroups and lazily unmounts anything under dir. It is used both after a
// normal stop (where it finds nothing to kill) and by Reap.
func haltDir(dir string) error {
	var errs []error
	var st state
	if b, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		json.Unmarshal(b, &st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ps []hostfs.Process
		// Without its start time, a recorded pid may since belong to
		// another process: only the command lines count then.
		if init := (hostfs.Process{Pid: st.Pid, Start: st.Start}); st.Pid > 0 && st.Start != 0 && init.Alive() {
			ps = append(ps, init)
		}
		ps = append(ps, referencing(dir)...)
		if len(ps) == 0 {
			break
		}
		var pids []int
		for _, p := range ps {
			p.Signal(syscall.SIGKILL)
			pids = append(pids, p.Pid)
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes of the daemon in %s still running: %v", dir, pids))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Cgroup != "" {
		if err := cgroup.RemovePath(st.Cgroup); err != nil {
			errs = append(errs, err)
		}
	}
	if err := hostfs.UnmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeTree deletes root like os.RemoveAll, but unlinks files with
// several workers: a data root holds thousands of files, and unlinking
// them one after the other is what makes a teardown slow. It never
// crosses into another file system: it fails instead.
func removeTree(root string) error {
	fi, err := os.Lstat(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return os.RemoveAll(root)
	}
	dev := st.Dev
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   = []string{root}
		pending = 1 // directories queued or being read
		foreign []string
	)
	worker := func() {
		for {
			mu.Lock()
			for len(queue) == 0 && pending > 0 {
				cond.Wait()
			}
			if pending == 0 {
				mu.Unlock()
				return
			}
			d := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			mu.Unlock()
			var subs, other []string
			ents, _ := os.ReadDir(d) // what is left, RemoveAll reports
			for _, e := range ents {
				p := filepath.Join(d, e.Name())
				if !e.IsDir() {
					syscall.Unlink(p)
					continue
				}
				if fi, err := os.Lstat(p); err == nil {
					if s, ok := fi.Sys().(*syscall.Stat_t); ok && s.Dev != dev {
						other = append(other, p)
						continue
					}
				}
				subs = append(subs, p)
			}
			mu.Lock()
			queue = append(queue, subs...)
			foreign = append(foreign, other...)
			pending += len(subs) - 1
			mu.Unlock()
			cond.Broadcast()
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); worker() }()
	}
	wg.Wait()
	if len(foreign) > 0 {
		return fmt.Errorf("%s holds other file systems, not removed: %q", root, foreign)
	}
	return os.RemoveAll(root)
}

// referencing returns the live processes, other than this one, with an
// argument naming dir or a path under it.
func referencing(dir string) []hostfs.Process {
	all, _ := hostfs.Procs()
	var ps []hostfs.Process
	for _, p := range all {
		if p.Pid == os.Getpid() || p.State == 'Z' || p.State == 'X' {
			continue
		}
		for _, a := range p.Args() {
			if a == dir || strings.Contains(a, dir+"/") || strings.HasSuffix(a, "="+dir) {
				ps = append(ps, p)
				break
			}
		}
	}
	return ps
}

// tail returns the last n lines of the file at p.
func tail(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// dataRootFull reports whether the daemon's data root, a tmpfs that exists
// only in the daemon's mount namespace (seen through its init's root), has
// less than 1 MiB left.
func (d *Daemon) dataRootFull() bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(fmt.Sprintf("/proc/%d/root%s", d.pid, filepath.Join(d.dir, dataDir)), &st); err != nil {
		return false
	}
	return st.Bavail*uint64(st.Bsize) < 1<<20
}

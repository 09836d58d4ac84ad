// Package sandbox is the part of the rootless kaniko runner that runs
// inside the job's namespaces, before kaniko itself. It is linked into the
// executor binary (cmd/kaniko-executor), so the sandbox needs no shell and no
// other binary: the executor sets up its own root and then becomes kaniko.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/netmode"
)

// Environment variables through which the runner describes the sandbox to
// the executor. They are removed before kaniko starts.
const (
	EnvRoot    = "BUILDGW_SANDBOX_ROOT"    // the job root to pivot into
	EnvContext = "BUILDGW_SANDBOX_CONTEXT" // mounted read-only at /workspace
	EnvOutput  = "BUILDGW_SANDBOX_OUTPUT"  // mounted at /kaniko/out
	EnvBase    = "BUILDGW_SANDBOX_BASE"    // mounted read-only at BaseImages
	EnvCache   = "BUILDGW_SANDBOX_CACHE"   // the tenant's layer cache, mounted at LayerCache
	EnvRemove  = "BUILDGW_SANDBOX_REMOVE"  // remove this tree and exit
	// EnvExecutor, if set, is the gateway's executor, bound read-only at
	// /kaniko/executor.
	EnvExecutor = "BUILDGW_SANDBOX_EXECUTOR"
	// EnvHold names the program to become once the gateway writes a byte
	// to file descriptor fdRelease: the gateway first moves the process
	// into the build's cgroup, so that everything the build starts is
	// inside it.
	EnvHold = "BUILDGW_SANDBOX_HOLD"
)

// EnvSharedCache, if set, is the tenant's shared layer cache, mounted
// read-only at SharedLayerCache. EnvCache is then the build's own cache
// directory, whose entries link into it.
const EnvSharedCache = "BUILDGW_SANDBOX_SHARED_CACHE"

// SharedLayerCache holds the tenant's shared cache entries, read-only.
const SharedLayerCache = "/kaniko/cache-shared"

// fdRelease is the hold's file descriptor, after the egress handshake's.
const fdRelease = 5

// Paths inside the job root.
const (
	Workspace = "/workspace"
	Output    = "/kaniko/out"
	// LayerCache holds the build's kaniko layer cache, one OCI layout
	// per cache key.
	LayerCache = "/kaniko/cache"
	oldRoot    = "/.oldroot"
)

// Enter prepares the sandbox if the environment asks for one. It reports
// whether the caller should go on to run kaniko (false for a removal).
// It must run in fresh user, mount, pid, network, IPC and UTS namespaces,
// as their root.
func Enter() (bool, error) {
	if prog := os.Getenv(EnvHold); prog != "" {
		os.Unsetenv(EnvHold)
		f := os.NewFile(fdRelease, "release")
		var b [1]byte
		n, _ := f.Read(b[:])
		f.Close()
		if n != 1 {
			return false, errors.New("the gateway did not release the sandbox")
		}
		if err := unix.Exec(prog, append([]string{prog}, os.Args[1:]...), os.Environ()); err != nil {
			return false, fmt.Errorf("starting %s: %w", prog, err)
		}
	}
	if dir := os.Getenv(EnvRemove); dir != "" {
		// Used by a gateway that is not root: files created under
		// subordinate uids can only be removed from inside the namespace.
		return false, os.RemoveAll(dir)
	}
	root := os.Getenv(EnvRoot)
	if root == "" {
		return true, nil
	}
	// Capabilities are dropped per thread: this goroutine stays on the
	// thread that drops them and then execs.
	runtime.LockOSThread()
	ctxDir, out, base, network, cache, exe := os.Getenv(EnvContext), os.Getenv(EnvOutput), os.Getenv(EnvBase), netmode.Mode(os.Getenv(EnvNetwork)), os.Getenv(EnvCache), os.Getenv(EnvExecutor)
	shared := os.Getenv(EnvSharedCache)
	for _, k := range []string{EnvRoot, EnvContext, EnvOutput, EnvBase, EnvNetwork, EnvCache, EnvExecutor, EnvSharedCache} {
		os.Unsetenv(k)
	}
	if err := pivot(root, ctxDir, out, base, cache, shared, exe); err != nil {
		return false, fmt.Errorf("preparing sandbox: %w", err)
	}
	if err := setupNetwork(network); err != nil {
		return false, fmt.Errorf("preparing sandbox network: %w", err)
	}
	if err := harden(); err != nil {
		return false, fmt.Errorf("hardening the sandbox: %w", err)
	}
	// Start over inside the new root. Package initialisers have already run
	// against the host's filesystem (kaniko loads its CA pool in one), and
	// nothing the build trusts may come from there.
	env := os.Environ()
	if base != "" {
		env = append(env, envSealed+"=1")
	}
	// argv[0] as the sandbox knows the executor: the host path it was
	// started by would show in /proc/1/cmdline to every build step.
	if err := unix.Exec(executorPath, append([]string{executorPath}, os.Args[1:]...), env); err != nil {
		return false, fmt.Errorf("re-executing inside the sandbox: %w", err)
	}
	return false, nil // not reached
}

// executorPath is where the runner installs the executor in the job root.
const executorPath = "/kaniko/executor"

func pivot(root, ctxDir, out, base, cache, shared, exe string) error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding job root: %w", err)
	}
	if err := mountDev(filepath.Join(root, "dev")); err != nil {
		return err
	}
	type bind struct {
		src, dst string
		flags    uintptr
		ro       bool
	}
	binds := []bind{
		{ctxDir, Workspace[1:], unix.MS_BIND, true},
		{out, Output[1:], unix.MS_BIND, false},
	}
	if exe != "" {
		binds = append(binds, bind{exe, executorPath[1:], unix.MS_BIND, true})
	}
	if base != "" {
		binds = append(binds, bind{base, BaseImages[1:], unix.MS_BIND, true})
	}
	if cache != "" {
		binds = append(binds, bind{cache, LayerCache[1:], unix.MS_BIND, false})
	}
	if shared != "" {
		binds = append(binds, bind{shared, SharedLayerCache[1:], unix.MS_BIND, true})
	}
	for _, b := range binds {
		dst := filepath.Join(root, b.dst)
		if err := unix.Mount(b.src, dst, "", b.flags, ""); err != nil {
			return fmt.Errorf("mounting %s: %w", b.dst, err)
		}
		if b.ro {
			if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				return fmt.Errorf("making %s read-only: %w", b.dst, err)
			}
		}
	}
	// A proc of our own pid namespace: the build sees only its own
	// processes.
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting proc: %w", err)
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	// pivot_root and not chroot: root of a user namespace can leave a
	// chroot, but not a root whose old root is unmounted.
	if err := unix.PivotRoot(".", oldRoot[1:]); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount(oldRoot, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the host's root: %w", err)
	}
	if err := os.Remove(oldRoot); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", oldRoot, err)
	}
	return nil
}

// devices are the host device nodes a build gets: those that shells,
// compilers and package managers expect, and that give nothing away.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// mountDev gives the sandbox a /dev of its own. Not a bind of the host's:
// that shares the host's /dev/shm, /dev/mqueue and terminals, where other
// processes of the host leave files (and secrets) that any build could then
// read and write.
func mountDev(dev string) error {
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=1m"); err != nil {
		return fmt.Errorf("mounting /dev: %w", err)
	}
	for _, d := range devices {
		src := filepath.Join("/dev", d)
		if _, err := os.Stat(src); err != nil {
			// A host (or container) without it: the build goes without.
			continue
		}
		dst := filepath.Join(dev, d)
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("creating /dev/%s: %w", d, err)
		}
		f.Close()
		// A bind keeps the host mount's flags, so the node stays usable
		// although the user namespace could not create it.
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mounting /dev/%s: %w", d, err)
		}
	}
	links := map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", name, err)
		}
	}
	// A /dev/shm of the build's own, as Docker gives every container.
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		return fmt.Errorf("creating /dev/shm: %w", err)
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=64m"); err != nil {
		return fmt.Errorf("mounting /dev/shm: %w", err)
	}
	return nil
}

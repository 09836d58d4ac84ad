// Package sandboxinit is the part of the rootless kaniko runner that runs
// inside the job's namespaces, before kaniko itself. It is linked into the
// executor binary (cmd/kaniko-executor), so the sandbox needs no shell and no
// other binary: the executor sets up its own root and then becomes kaniko.
// What it takes from the runner (the job root's paths, the environment,
// the file descriptors) is defined once, in package sandbox.
package sandboxinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/sandbox"
)

// Enter prepares the sandbox if the environment asks for one. It reports
// whether the caller should go on to run kaniko (false for a removal).
// It must run in fresh user, mount, pid, network, IPC and UTS namespaces,
// as their root.
func Enter() (bool, error) {
	if prog := os.Getenv(sandbox.EnvHold); prog != "" {
		os.Unsetenv(sandbox.EnvHold)
		f := sandbox.Release.File()
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
	if dir := os.Getenv(sandbox.EnvRemove); dir != "" {
		// Used by a gateway that is not root: files created under
		// subordinate uids can only be removed from inside the namespace.
		return false, os.RemoveAll(dir)
	}
	root := os.Getenv(sandbox.EnvRoot)
	if root == "" {
		return true, nil
	}
	// Capabilities are dropped per thread: this goroutine stays on the
	// thread that drops them and then execs.
	runtime.LockOSThread()
	ctxDir, out, base, network, cache, exe := os.Getenv(sandbox.EnvContext), os.Getenv(sandbox.EnvOutput), os.Getenv(sandbox.EnvBase), netmode.Mode(os.Getenv(sandbox.EnvNetwork)), os.Getenv(sandbox.EnvCache), os.Getenv(sandbox.EnvExecutor)
	shared := os.Getenv(sandbox.EnvSharedCache)
	procBind := os.Getenv(sandbox.EnvProcBind) == "1"
	for _, k := range []string{sandbox.EnvProcBind, sandbox.EnvRoot, sandbox.EnvContext, sandbox.EnvOutput, sandbox.EnvBase, sandbox.EnvNetwork, sandbox.EnvCache, sandbox.EnvExecutor, sandbox.EnvSharedCache} {
		os.Unsetenv(k)
	}
	if err := pivot(root, ctxDir, out, base, cache, shared, exe, procBind); err != nil {
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
	if err := unix.Exec(sandbox.Executor, append([]string{sandbox.Executor}, os.Args[1:]...), env); err != nil {
		return false, fmt.Errorf("re-executing inside the sandbox: %w", err)
	}
	return false, nil // not reached
}

func pivot(root, ctxDir, out, base, cache, shared, exe string, procBind bool) error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding job root: %w", err)
	}
	if err := mountDev(filepath.Join(root, sandbox.Dev)); err != nil {
		return err
	}
	type bind struct {
		src, dst string
		flags    uintptr
		ro       bool
	}
	binds := []bind{
		{ctxDir, sandbox.Workspace[1:], unix.MS_BIND, true},
		{out, sandbox.Output[1:], unix.MS_BIND, false},
	}
	if exe != "" {
		binds = append(binds, bind{exe, sandbox.Executor[1:], unix.MS_BIND, true})
	}
	if base != "" {
		binds = append(binds, bind{base, sandbox.BaseImages[1:], unix.MS_BIND, true})
	}
	if cache != "" {
		binds = append(binds, bind{cache, sandbox.LayerCache[1:], unix.MS_BIND, false})
	}
	if shared != "" {
		binds = append(binds, bind{shared, sandbox.SharedLayerCache[1:], unix.MS_BIND, true})
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
	// processes. In a container, the container's proc (see
	// sandbox.EnvProcBind).
	if procBind {
		if err := unix.Mount("/proc", filepath.Join(root, sandbox.Proc), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding proc: %w", err)
		}
	} else if err := unix.Mount("proc", filepath.Join(root, sandbox.Proc), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting proc: %w", err)
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	// pivot_root and not chroot: root of a user namespace can leave a
	// chroot, but not a root whose old root is unmounted.
	if err := unix.PivotRoot(".", sandbox.OldRoot[1:]); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount(sandbox.OldRoot, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the host's root: %w", err)
	}
	if err := os.Remove(sandbox.OldRoot); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", sandbox.OldRoot, err)
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

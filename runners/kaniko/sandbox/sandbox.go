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

	"golang.org/x/sys/unix"
)

// Environment variables through which the runner describes the sandbox to
// the executor. They are removed before kaniko starts.
const (
	EnvRoot    = "BUILDGW_SANDBOX_ROOT"    // the job root to pivot into
	EnvContext = "BUILDGW_SANDBOX_CONTEXT" // mounted read-only at /workspace
	EnvOutput  = "BUILDGW_SANDBOX_OUTPUT"  // mounted at /kaniko/out
	EnvRemove  = "BUILDGW_SANDBOX_REMOVE"  // remove this tree and exit
)

// Paths inside the job root.
const (
	Workspace = "/workspace"
	Output    = "/kaniko/out"
	oldRoot   = "/.oldroot"
)

// Enter prepares the sandbox if the environment asks for one. It reports
// whether the caller should go on to run kaniko (false for a removal).
// It must run in fresh user, mount and pid namespaces, as their root.
func Enter() (bool, error) {
	if dir := os.Getenv(EnvRemove); dir != "" {
		// Used by a gateway that is not root: files created under
		// subordinate uids can only be removed from inside the namespace.
		return false, os.RemoveAll(dir)
	}
	root := os.Getenv(EnvRoot)
	if root == "" {
		return true, nil
	}
	ctxDir, out := os.Getenv(EnvContext), os.Getenv(EnvOutput)
	for _, k := range []string{EnvRoot, EnvContext, EnvOutput} {
		os.Unsetenv(k)
	}
	if err := pivot(root, ctxDir, out); err != nil {
		return false, fmt.Errorf("preparing sandbox: %w", err)
	}
	return true, nil
}

func pivot(root, ctxDir, out string) error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding job root: %w", err)
	}
	binds := []struct {
		src, dst string
		flags    uintptr
		ro       bool
	}{
		{"/dev", "dev", unix.MS_BIND | unix.MS_REC, false},
		{ctxDir, Workspace[1:], unix.MS_BIND, true},
		{out, Output[1:], unix.MS_BIND, false},
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

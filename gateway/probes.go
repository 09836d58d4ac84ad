package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// What the gateway asks of the host at start-up, beside what the runners
// check themselves (kanikoRunner, dindRunner): whether it may mount, how
// much memory there is, whether the sandbox user can reach the state
// directory, where the release binaries are. Each is asked once, by
// build.

// maxDefaultWorkspaceMemory bounds the default size of the workspaces'
// tmpfs.
const maxDefaultWorkspaceMemory = 16 << 30

// workspaceMemory returns the size of the workspaces' tmpfs (0: disk)
// and where workspaces go, for the start-up log. canMount reports whether
// this process may mount a tmpfs (asked only when it matters: it tries a
// mount); mounted is the size of one already mounted in its place, or 0.
func (c Config) workspaceMemory(canMount func() bool, mounted int64) (int64, string) {
	switch c.Workspaces {
	case "disk":
		return 0, "disk"
	case "auto", "":
		if mounted > 0 {
			return mounted, fmt.Sprintf("memory, the tmpfs of %d MiB mounted at state_dir/mem", mounted>>20)
		}
		if !canMount() {
			return 0, "disk (mounting a tmpfs needs root with CAP_SYS_ADMIN, or one mounted at state_dir/mem)"
		}
	}
	size := c.WorkspaceMemoryBytes
	if size == 0 {
		var ok bool
		if size, ok = defaultTmpfsSize(4, maxDefaultWorkspaceMemory); !ok {
			return 0, fmt.Sprintf("disk (a quarter of the memory, %d MiB, is too little for a tmpfs)", size>>20)
		}
	}
	return size, fmt.Sprintf("memory, a tmpfs of %d MiB", size>>20)
}

// canMount reports whether this process may mount a tmpfs: it tries,
// on an empty directory of its own under parent. Holding CAP_SYS_ADMIN is
// not enough (a container's seccomp profile or LSM may refuse mount).
func canMount(parent string) bool {
	dir, err := os.MkdirTemp(parent, "buildgw-mount-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(dir)
	if unix.Mount("buildgw-probe", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k") != nil {
		return false
	}
	return unix.Unmount(dir, unix.MNT_DETACH) == nil
}

// defaultTmpfsSize is the host's memory divided by div, in whole MiB, at
// most maxSize; ok is false when that is under minDefaultTmpfs, too little
// to be worth a tmpfs.
func defaultTmpfsSize(div, maxSize int64) (size int64, ok bool) {
	size = min(memTotal()/div, maxSize) &^ (1<<20 - 1)
	return size, size >= minDefaultTmpfs
}

// memTotal is the host's memory in bytes, or 0 if unknown.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}

// checkTraversable makes sure that the sandbox user, which is neither the
// owner nor in the group of the state directory, can reach its workspace
// inside it.
func checkTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("state directory %s is unreachable for the sandbox user: %s lacks o+x (chmod o+x %s)", dir, d, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// downloadsDir is dir, or by default the running binary's directory when
// it holds a buildctl-lite (as bin/ does after a build, and the release
// image does).
func downloadsDir(dir string) string {
	if dir != "" {
		return dir
	}
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(self), "buildctl-lite*"))
	if len(matches) == 0 {
		return ""
	}
	return filepath.Dir(self)
}

// checkDownloadsDir checks that downloads_dir, if set, is a directory.
func checkDownloadsDir(dir string) error {
	if dir == "" {
		return nil
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("downloads_dir: %q must be an existing absolute directory", dir)
	}
	return nil
}

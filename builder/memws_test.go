package builder_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/testenv"
)

// fsType is the statfs type of path's file system, 0 if it is gone.
func fsType(path string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return 0
	}
	return st.Type
}

// entries lists dir's names, but the trash's and the filler's.
// superOptions returns the options of the file system mounted on top at
// dir, as mountinfo shows them.
func superOptions(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 3 && f[4] == dir {
			opts = g[2]
		}
	}
	return opts
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != ".trash" && e.Name() != "filler" {
			names = append(names, e.Name())
		}
	}
	return names
}

// memoryEnv is a restartable whose workspaces' tmpfs, if left mounted, is
// unmounted when the test ends.
func memoryEnv(t *testing.T) *restartable {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	r := newRestartable(t)
	t.Cleanup(func() { unix.Unmount(filepath.Join(r.dir, "mem"), unix.MNT_DETACH) })
	return r
}

func TestMemoryWorkspaces(t *testing.T) {
	r := memoryEnv(t)
	base := testenv.Busybox(t, r.reg)
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
	mem, jobs := filepath.Join(r.dir, "mem"), filepath.Join(r.dir, "jobs")
	opts := []builder.Option{builder.WithMemoryWorkspaces(64 << 20), builder.WithConcurrency(1), builder.WithShutdownGrace(200 * time.Millisecond)}

	m1, stop1 := r.start(t, true, opts...)
	if got := fsType(mem); got != unix.TMPFS_MAGIC {
		t.Fatalf("statfs(%s).Type = %#x, want tmpfs", mem, got)
	}
	// Large files in huge pages, where the kernel has them for tmpfs.
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/shmem_enabled"); err == nil {
		if got := superOptions(t, mem); !strings.Contains(got, "huge=within_size") {
			t.Errorf("options of the tmpfs at %s = %q, want huge=within_size", mem, got)
		}
	}
	// A running build's whole workspace, its job root too, is in memory.
	long := submitTo(t, m1, "alice", "", api.BuildSpec{Destinations: []string{dest("long")}}, busyboxContext(t, base, "sleep 300"))
	waitLog(t, long, "Running: [/bin/sh -c sleep 300]", time.Minute)
	root := filepath.Join(mem, long.ID, "root")
	if got := fsType(root); got != unix.TMPFS_MAGIC {
		t.Errorf("statfs(%s).Type = %#x, want tmpfs", root, got)
	}
	if got := entries(t, jobs); len(got) != 0 {
		t.Errorf("workspaces on disk = %v, want none", got)
	}
	queued := submitTo(t, m1, "bob", "", api.BuildSpec{Destinations: []string{dest("queued")}}, scratchContext(t, "queued in memory"))
	if mem, disk := m1.Workspaces(); mem != 2 || disk != 0 {
		t.Errorf("Workspaces() = %d in memory, %d on disk, want 2, 0", mem, disk)
	}
	if size, free := m1.WorkspaceMemory(); size != 64<<20 || free <= 0 || free >= size {
		t.Errorf("WorkspaceMemory() = %d, %d, want a size of 64 MiB and some of it used", size, free)
	}

	// Shut down: the tmpfs stays, with the queued build's context.
	stop1()
	if got := queued.Status(); got != api.StatusQueued {
		t.Fatalf("queued build after shutdown = %v, want queued", got)
	}
	if got := fsType(mem); got != unix.TMPFS_MAGIC {
		t.Fatalf("after a shutdown with a queued build, statfs(%s).Type = %#x, want tmpfs still mounted", mem, got)
	}
	if got := entries(t, mem); len(got) != 1 || got[0] != queued.ID {
		t.Errorf("workspaces in memory after shutdown = %v, want only the queued build's %s", got, queued.ID)
	}

	// A process a killed gateway left in a workspace in memory, in a
	// mount namespace of its own where the tmpfs is detached, as after a
	// sandbox's pivot_root: seen from outside, its directory reads
	// "/leftover", not a path under the state directory.
	left := filepath.Join(mem, "leftover")
	if err := os.Mkdir(left, 0o700); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "umount -l "+mem+" && exec sleep 300")
	orphan.Dir = left
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { orphan.Wait(); close(exited) }()
	t.Cleanup(func() { orphan.Process.Kill() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", orphan.Process.Pid)); cwd == "/leftover" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process left in the workspace never detached it")
		}
	}

	// The next start kills it, finds the queued build and builds it; the
	// other workspaces are gone.
	m2, stop2 := r.start(t, true, opts...)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("the process left in a workspace in memory still runs after a restart")
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover workspace after a restart: stat = %v, want it gone", err)
	}
	j, err := m2.Get("bob", queued.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("build queued across the restart = %v %q, want succeeded", b.Status, b.Error)
	}

	// A tmpfs with less than a quarter free: the next workspace goes to
	// disk.
	filler := filepath.Join(mem, "filler")
	if err := os.WriteFile(filler, make([]byte, 50<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	onDisk := submitTo(t, m2, "alice", "", api.BuildSpec{Destinations: []string{dest("disk")}}, busyboxContext(t, base, "sleep 300"))
	waitLog(t, onDisk, "Running: [/bin/sh -c sleep 300]", time.Minute)
	if got := entries(t, jobs); len(got) != 1 || got[0] != onDisk.ID {
		t.Errorf("workspaces on disk with the tmpfs full = %v, want %s", got, onDisk.ID)
	}
	if _, disk := m2.Workspaces(); disk != 1 {
		t.Errorf("Workspaces() on disk = %d with the tmpfs full, want 1", disk)
	}
	if _, err := m2.Cancel("alice", onDisk.ID); err != nil {
		t.Fatal(err)
	}
	if b := wait(t, onDisk, time.Minute); b.Status != api.StatusCancelled {
		t.Errorf("cancelled build = %v, want cancelled", b.Status)
	}
	os.Remove(filler)

	// Nothing queued: a shutdown unmounts the tmpfs.
	stop2()
	if got := fsType(mem); got == unix.TMPFS_MAGIC {
		t.Errorf("after a shutdown with nothing queued, %s is still a tmpfs", mem)
	}
	if got := append(entries(t, mem), entries(t, jobs)...); len(got) != 0 {
		t.Errorf("workspaces left = %v, want none", got)
	}
	if b := long.Snapshot(); b.Status != api.StatusCancelled || !strings.Contains(b.Error, "grace period") {
		t.Errorf("running build after the first shutdown = %v %q, want cancelled", b.Status, b.Error)
	}
}

// A tmpfs the operator mounted (so that a gateway without CAP_SYS_ADMIN
// gets memory workspaces) is used as it is and never unmounted.
func TestMemoryWorkspacesOperatorMount(t *testing.T) {
	r := memoryEnv(t)
	mem := filepath.Join(r.dir, "mem")
	if err := os.Mkdir(mem, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("operator", mem, "tmpfs", 0, "size=32m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mem, unix.MNT_DETACH) })
	if got := builder.MountedMemory(r.dir); got != 32<<20 {
		t.Fatalf("MountedMemory(%s) = %d, want %d", r.dir, got, 32<<20)
	}
	if got := builder.MountedMemory(t.TempDir()); got != 0 {
		t.Errorf("MountedMemory(an empty state directory) = %d, want 0", got)
	}
	m, stop := r.start(t, true, builder.WithMemoryWorkspaces(builder.MountedMemory(r.dir)))
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/op:v1"}}, scratchContext(t, "x"))
	if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("build = %v %q, want succeeded", b.Status, b.Error)
	}
	stop()
	if got := fsType(mem); got != unix.TMPFS_MAGIC {
		t.Errorf("after shutdown, statfs(%s).Type = %#x, want the operator's tmpfs still mounted", mem, got)
	}
}

// A build that fills the workspaces' tmpfs is stopped while an eighth of
// it is still free, so that the other builds in memory go on.
func TestMemoryWorkspacesAlmostFull(t *testing.T) {
	r := memoryEnv(t)
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, builder.WithMemoryWorkspaces(256<<20), builder.WithDiskCheckInterval(200*time.Millisecond))
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/filler:v1"}},
		busyboxContext(t, base, "dd if=/dev/zero of=/big bs=1M count=228; sleep 60"))
	b := wait(t, j, 2*time.Minute)
	const want = "the workspaces' tmpfs is almost full"
	if b.Status != api.StatusFailed || !strings.Contains(b.Error, want) || !strings.Contains(b.Error, "of 32 MiB") {
		t.Errorf("build filling the tmpfs = %v %q, want failed %q naming 32 MiB; log:\n%s", b.Status, b.Error, want, logOf(t, j))
	}
	if b.FinishedAt.Sub(*b.StartedAt) > 50*time.Second {
		t.Errorf("build filling the tmpfs ran %s, want it stopped before its sleep ends", b.FinishedAt.Sub(*b.StartedAt))
	}
}

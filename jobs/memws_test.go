package jobs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/workspace"
)

// fsType is the statfs type of path's file system, 0 if it is gone.
func fsType(path string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return 0
	}
	return st.Type
}

// superOptions returns the options of the file system mounted on top at
// dir, as mountinfo shows them.
func superOptions(t *testing.T, dir string) string {
	t.Helper()
	m, err := hostfs.MountAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m == nil {
		return ""
	}
	return m.VFSOptions
}

// entries lists dir's names, but the trash's and the filler's.
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
	t.Cleanup(func() { unix.Unmount(r.l.Mem, unix.MNT_DETACH) })
	return r
}

// memLimits keeps the largest possible context small enough for the
// tests' small memory for workspaces.
var memLimits = jobs.WithContextLimits(archive.Limits{MaxBytes: 4 << 20, MaxFiles: 100})

func TestMemoryWorkspaces(t *testing.T) {
	r := memoryEnv(t)
	base := testenv.Busybox(t, r.reg)
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
	mem, jobsDir := r.l.Mem, r.l.Jobs
	// Room for two builds' own tmpfs of 28 MiB in 64 MiB.
	opts := []jobs.Option{jobs.WithMemoryWorkspaces(64 << 20), jobs.WithWorkspaceLimit(28 << 20), memLimits,
		jobs.WithConcurrency(1), jobs.WithShutdownGrace(200 * time.Millisecond)}

	m1, stop1 := r.start(t, true, opts...)
	// A running build's whole workspace, its job root too, is in memory,
	// on a tmpfs of its own as large as its limit.
	long := submitTo(t, m1, "alice", "", api.BuildSpec{Destinations: []string{dest("long")}}, busyboxContext(t, base, "sleep 300"))
	waitLog(t, long, "Running: [/bin/sh -c sleep 300]", time.Minute)
	own := filepath.Join(mem, long.ID)
	root := filepath.Join(own, "root")
	if got := fsType(root); got != unix.TMPFS_MAGIC {
		t.Errorf("statfs(%s).Type = %#x, want tmpfs", root, got)
	}
	if size := tmpfsSize(own); size != 28<<20 {
		t.Errorf("size of the tmpfs at %s = %d, want the workspace limit, 28 MiB", own, size)
	}
	// Large files in huge pages, where the kernel has them for tmpfs.
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/shmem_enabled"); err == nil {
		if got := superOptions(t, own); !strings.Contains(got, "huge=within_size") {
			t.Errorf("options of the tmpfs at %s = %q, want huge=within_size", own, got)
		}
	}
	if got := entries(t, jobsDir); len(got) != 0 {
		t.Errorf("workspaces on disk = %v, want none", got)
	}
	queued := submitTo(t, m1, "bob", "", api.BuildSpec{Destinations: []string{dest("queued")}}, scratchContext(t, "queued in memory"))
	if mem, disk := m1.Workspaces(); mem != 2 || disk != 0 {
		t.Errorf("Workspaces() = %d in memory, %d on disk, want 2, 0", mem, disk)
	}
	if size, free := m1.WorkspaceMemory(); size != 64<<20 || free != 8<<20 {
		t.Errorf("WorkspaceMemory() = %d, %d, want 64 MiB with 8 MiB not reserved", size, free)
	}
	// No room left for a third: it goes to disk.
	third := submitTo(t, m1, "carol", "", api.BuildSpec{Destinations: []string{dest("third")}}, scratchContext(t, "on disk"))
	if got := entries(t, jobsDir); len(got) != 1 || got[0] != third.ID {
		t.Errorf("workspaces on disk with the memory reserved = %v, want %s", got, third.ID)
	}

	// Shut down: the queued build's tmpfs stays, with its context; the
	// running one's is gone.
	stop1()
	if got := queued.Status(); got != api.StatusQueued {
		t.Fatalf("queued build after shutdown = %v, want queued", got)
	}
	if got := fsType(filepath.Join(mem, queued.ID)); got != unix.TMPFS_MAGIC {
		t.Fatalf("after a shutdown with a queued build, its workspace's statfs type = %#x, want its tmpfs still mounted", got)
	}
	if got := entries(t, mem); len(got) != 1 || got[0] != queued.ID {
		t.Errorf("workspaces in memory after shutdown = %v, want only the queued build's %s", got, queued.ID)
	}

	// A process a killed gateway left in a workspace in memory, in a
	// mount namespace of its own where the tmpfs is detached, as after a
	// sandbox's pivot_root: seen from outside, its directory reads "/",
	// not a path under the state directory.
	left := filepath.Join(mem, "leftover")
	if err := os.Mkdir(left, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := workspace.MountTmpfs("buildgw-workspace", left, 1<<20); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "umount -l "+left+" && exec sleep 300")
	orphan.Dir = left
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { orphan.Wait(); close(exited) }()
	t.Cleanup(func() { orphan.Process.Kill() })
	for deadline := time.Now().Add(testenv.Scale(5 * time.Second)); ; time.Sleep(20 * time.Millisecond) {
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", orphan.Process.Pid)); cwd == "/" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process left in the workspace never detached it")
		}
	}

	// The next start kills it, finds the queued builds and builds them;
	// the other workspaces are gone.
	m2, stop2 := r.start(t, true, opts...)
	select {
	case <-exited:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Errorf("the process left in a workspace in memory still runs after a restart")
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover workspace after a restart: stat = %v, want it gone", err)
	}
	for _, q := range []*jobs.Job{queued, third} {
		j, err := m2.Get(q.Owner, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
			t.Fatalf("build queued across the restart = %v %q, want succeeded", b.Status, b.Error)
		}
	}
	if size, free := m2.WorkspaceMemory(); free != size {
		t.Errorf("WorkspaceMemory() with no build = %d, %d, want all of it free", size, free)
	}

	// Nothing queued: a shutdown leaves no workspace and no tmpfs.
	stop2()
	if got := append(entries(t, mem), entries(t, jobsDir)...); len(got) != 0 {
		t.Errorf("workspaces left = %v, want none", got)
	}
	if b := long.Snapshot(); !b.Interrupted() || !strings.Contains(b.Error, "grace period") {
		t.Errorf("running build after the first shutdown = %v %q, want interrupted", b.Status, b.Error)
	}
}

// tmpfsSize is the size of the tmpfs at dir.
func tmpfsSize(dir string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return 0
	}
	return int64(st.Blocks) * st.Bsize
}

// A tmpfs the operator mounted (so that a gateway without CAP_SYS_ADMIN
// gets memory workspaces) is used as it is and never unmounted.
func TestMemoryWorkspacesOperatorMount(t *testing.T) {
	r := memoryEnv(t)
	mem := r.l.Mem
	if err := os.Mkdir(mem, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("operator", mem, "tmpfs", 0, "size=32m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mem, unix.MNT_DETACH) })
	if got := workspace.MountedMemory(r.l); got != 32<<20 {
		t.Fatalf("MountedMemory(%s) = %d, want %d", r.dir, got, 32<<20)
	}
	if got := workspace.MountedMemory(workspace.NewLayout(t.TempDir())); got != 0 {
		t.Errorf("MountedMemory(an empty state directory) = %d, want 0", got)
	}
	m, stop := r.start(t, true, jobs.WithMemoryWorkspaces(workspace.MountedMemory(r.l)))
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/op:v1"}}, scratchContext(t, "x"))
	if b := wait(t, j, time.Minute); b.Status != api.StatusSucceeded {
		t.Fatalf("build = %v %q, want succeeded", b.Status, b.Error)
	}
	stop()
	if got := fsType(mem); got != unix.TMPFS_MAGIC {
		t.Errorf("after shutdown, statfs(%s).Type = %#x, want the operator's tmpfs still mounted", mem, got)
	}
}

// One build that fills its workspace in memory, as fast as dd writes,
// takes no room from another tenant's build running beside it: each has
// a tmpfs of its own, and the one that filled it fails naming its limit,
// not "kaniko failed".
func TestMemoryWorkspacesIsolated(t *testing.T) {
	r := memoryEnv(t)
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithMemoryWorkspaces(256<<20), jobs.WithWorkspaceLimit(112<<20), memLimits,
		jobs.WithConcurrency(2))
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
	// bob writes a MiB ten times a second for 8 s: a moment without room
	// fails his build.
	bob := submitTo(t, m, "bob", "", api.BuildSpec{Destinations: []string{dest("bob")}},
		busyboxContext(t, base, `i=0; while [ $i -lt 80 ]; do dd if=/dev/zero of=/x bs=1M count=1 2>/dev/null || exit 1; rm /x; i=$((i+1)); sleep 0.1; done`))
	waitLog(t, bob, "Running: [/bin/sh -c i=0", time.Minute)
	alice := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{dest("alice")}},
		busyboxContext(t, base, "dd if=/dev/zero of=/big bs=1M count=300; sleep 3; exit 1"))
	const want = "the build filled its workspace (limit 112 MiB, workspace_max_bytes)"
	if b := wait(t, alice, 2*time.Minute); b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
		t.Errorf("build filling its tmpfs = %v %q, want failed %q; log:\n%s", b.Status, b.Error, want, logOf(t, alice))
	}
	if b := wait(t, bob, 2*time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("other tenant's build beside it = %v %q, want succeeded; log:\n%s", b.Status, b.Error, logOf(t, bob))
	}
}

// An upload that might not fit in the memory a build can have goes to
// disk, and so do the ones that find the memory reserved: many large
// uploads at once are all accepted (none gets ENOSPC, HTTP 507) while the
// disk has room.
func TestMemoryWorkspacesLargeUploads(t *testing.T) {
	r := memoryEnv(t)
	m, _ := r.start(t, false, jobs.WithMemoryWorkspaces(64<<20),
		jobs.WithContextLimits(archive.Limits{MaxBytes: 100 << 20, MaxFiles: 100}))
	big := contextTar(t, file{"Dockerfile", "FROM scratch\nCOPY big /big\n"}, file{"big", string(randomBytes(t, 80<<20))})
	j, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", Spec: api.BuildSpec{Destinations: []string{r.reg + "/test/big:v1"}}}, bytes.NewReader(big))
	if err != nil {
		t.Fatalf("Submit(80 MiB, with 64 MiB of memory for workspaces) = %v, want it accepted on disk", err)
	}
	if got := entries(t, r.l.Jobs); len(got) != 1 || got[0] != j.ID {
		t.Errorf("workspaces on disk = %v, want the large upload's %s", got, j.ID)
	}

	// Six uploads of 20 MiB at once, each of which fits alone.
	m2dir := memoryEnv(t)
	m2, _ := m2dir.start(t, false, jobs.WithMemoryWorkspaces(64<<20),
		jobs.WithContextLimits(archive.Limits{MaxBytes: 24 << 20, MaxFiles: 100}))
	mid := contextTar(t, file{"Dockerfile", "FROM scratch\nCOPY mid /mid\n"}, file{"mid", string(randomBytes(t, 20<<20))})
	errs := make(chan error, 6)
	for i := range 6 {
		go func() {
			_, err := m2.Submit(context.Background(), jobs.SubmitRequest{Owner: fmt.Sprint("tenant", i), Spec: api.BuildSpec{Destinations: []string{m2dir.reg + "/test/mid:v1"}}}, bytes.NewReader(mid))
			errs <- err
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Errorf("Submit(one of 6 uploads of 20 MiB at once, 64 MiB of memory) = %v, want accepted", err)
		}
	}
	if mem, disk := m2.Workspaces(); mem+disk != 6 || disk == 0 {
		t.Errorf("Workspaces() = %d in memory, %d on disk, want all 6 placed, the ones without room on disk", mem, disk)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

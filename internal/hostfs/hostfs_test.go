package hostfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Process
		ok   bool
	}{
		{"42 (sleep) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1 2 3", Process{Pid: 42, PPid: 7, Start: 12345, State: 'S', Comm: "sleep"}, true},
		// A command name can hold spaces and parentheses.
		{"43 (a) Z 1 (b) R 9 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 1", Process{Pid: 43, PPid: 9, Start: 777, State: 'R', Comm: "a) Z 1 (b"}, true},
		{"44 (x) S 1", Process{}, false},
		{"garbage", Process{}, false},
	} {
		got, ok := parseStat([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseStat(%q) = %+v, %v, want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("hostfs-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func points(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := Mounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ps []string
	for _, m := range ms {
		ps = append(ps, m.Mountpoint)
	}
	return ps
}

func TestUnmountUnder(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "state")
	// Escaped in mountinfo as \040 and \134.
	odd := filepath.Join(dir, `with space\and backslash`)
	deep := filepath.Join(dir, "a", "b")
	kept := filepath.Join(dir, "kept")
	beside := filepath.Join(base, "state-beside") // shares the prefix, not below
	for _, d := range []string{dir, odd, filepath.Join(dir, "a"), deep, kept, filepath.Join(kept, "inner"), beside} {
		mountTmpfs(t, d)
	}
	mountTmpfs(t, deep) // stacked on the first: both go
	want := []string{dir, odd, filepath.Join(dir, "a"), deep, kept, filepath.Join(kept, "inner"), deep}
	if got := points(t, dir); !slices.Equal(got, want) {
		t.Fatalf("Mounts(%q) = %q, want %q", dir, got, want)
	}
	if m, err := MountAt(odd); err != nil || m == nil || m.Source != "hostfs-test" || m.FSType != "tmpfs" {
		t.Errorf("MountAt(%q) = %+v, %v, want the tmpfs", odd, m, err)
	}
	if err := UnmountUnder(dir, dir, kept); err != nil {
		t.Fatalf("UnmountUnder(%q) = %v", dir, err)
	}
	if got, want := points(t, dir), []string{dir, kept}; !slices.Equal(got, want) {
		t.Errorf("mounts after UnmountUnder(%q, %q, %q) = %q, want %q", dir, dir, kept, got, want)
	}
	if got := points(t, beside); len(got) != 1 {
		t.Errorf("mounts at %s after UnmountUnder(%q) = %q, want it untouched", beside, dir, got)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatalf("UnmountUnder(%q) = %v", dir, err)
	}
	if got := points(t, dir); len(got) != 0 {
		t.Errorf("mounts after UnmountUnder(%q) = %q, want none", dir, got)
	}
}

func TestTmpfsSpace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mem")
	mountTmpfs(t, dir)
	size, free, ok := TmpfsSpace(dir)
	if !ok || size != 1<<20 || free != size {
		t.Errorf("TmpfsSpace(%q) = %d, %d, %v, want %d, %d, true", dir, size, free, ok, 1<<20, 1<<20)
	}
	if !IsTmpfsMount(dir) {
		t.Errorf("IsTmpfsMount(%q) = false, want true", dir)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	if IsTmpfsMount(sub) {
		t.Errorf("IsTmpfsMount(%q) = true for a directory on a tmpfs mounted above, want false", sub)
	}
}

func start(t *testing.T, dir string, args ...string) (*exec.Cmd, Process) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	p, err := Lookup(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, p
}

func TestSignalChecksStartTime(t *testing.T) {
	_, p := start(t, "/", "sleep", "300")
	stale := p
	stale.Start++ // the process that had this pid before
	if err := stale.Signal(unix.SIGKILL); err != nil {
		t.Fatalf("Signal of a stale process = %v", err)
	}
	time.Sleep(50 * time.Millisecond) // a kill would have landed by now
	if !p.Alive() {
		t.Fatalf("Signal(SIGKILL) to pid %d with another start time killed the process that has the pid now", p.Pid)
	}
	if err := p.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Alive(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Signal(SIGKILL) with the right start time did not kill")
		}
	}
}

func TestKillUnder(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "ws")
	mem := filepath.Join(dir, "mem")
	mountTmpfs(t, mem)
	left := filepath.Join(mem, "left")
	os.Mkdir(left, 0o700)
	job := filepath.Join(dir, "job")
	os.Mkdir(job, 0o700)
	_, inside := start(t, job, "sleep", "300")
	// Working in dir itself, not below it: an operator's shell, say.
	_, outside := start(t, dir, "sleep", "300")
	// Working on the tmpfs from a mount namespace where it is detached:
	// its cwd reads "/left", not a path under dir.
	cmd, orphan := start(t, left, "unshare", "--mount", "--propagation", "private", "sh", "-c", "umount -l "+mem+" && exec sleep 300")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// Once sleep runs, umount is done.
		if q, _ := Lookup(orphan.Pid); q.Comm == "sleep" {
			if cwd, _, _ := orphan.Link("cwd"); cwd != "/left" {
				t.Fatalf("cwd of a process on a detached tmpfs = %q, want /left", cwd)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never detached the tmpfs", cmd.Process.Pid)
		}
	}
	killed := KillUnder(5*time.Second, dir)
	var pids []int
	for _, p := range killed {
		pids = append(pids, p.Pid)
	}
	slices.Sort(pids)
	want := []int{inside.Pid, orphan.Pid}
	slices.Sort(want)
	if !slices.Equal(pids, want) {
		t.Errorf("KillUnder(%q) killed %v (%+v), want %v (in it, and on its tmpfs seen from another mount namespace)", dir, pids, killed, want)
	}
	if inside.Alive() || orphan.Alive() {
		t.Errorf("processes under %s alive after KillUnder", dir)
	}
	if !outside.Alive() {
		t.Errorf("KillUnder(%q) killed pid %d working in it, not below", dir, outside.Pid)
	}
}

func TestProcs(t *testing.T) {
	_, p := start(t, "/", "sleep", "301")
	ps, err := Procs()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ps, func(q Process) bool { return q.Pid == p.Pid })
	if i < 0 || ps[i].Start != p.Start || ps[i].Comm != "sleep" {
		t.Fatalf("Procs() lacks %+v", p)
	}
	if got := ps[i].Args(); !slices.Equal(got, []string{"sleep", "301"}) {
		t.Errorf("Args() = %q, want [sleep 301]", got)
	}
	if ps[i].PPid != os.Getpid() {
		t.Errorf("PPid = %d, want %d", ps[i].PPid, os.Getpid())
	}
}

func TestTree(t *testing.T) {
	_, p := start(t, "/", "sh", "-c", "sleep 302 & sleep 303 & wait")
	var tree []int
	t.Cleanup(func() {
		for _, pid := range tree[min(1, len(tree)):] {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if tree, err = p.Tree(); err != nil {
			t.Fatalf("Tree() = %v", err)
		}
		if len(tree) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Tree() of a shell running 2 sleeps = %v, want 3 processes", tree)
		}
	}
	if tree[0] != p.Pid {
		t.Errorf("Tree() = %v, want %d first", tree, p.Pid)
	}
	for _, pid := range tree[1:] {
		if q, err := Lookup(pid); err != nil || q.PPid != p.Pid || q.Comm != "sleep" {
			t.Errorf("Tree()[%d] = %+v, %v, want a sleep started by %d", pid, q, err, p.Pid)
		}
	}
	stale := p
	stale.Start++
	if got, err := stale.Tree(); err != nil || len(got) != 0 {
		t.Errorf("Tree() of a process that ended = %v, %v, want none", got, err)
	}
}

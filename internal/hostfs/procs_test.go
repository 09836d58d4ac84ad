package hostfs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
)

// proc is a process a test started, and its end.
type proc struct {
	cmd  *exec.Cmd
	p    hostfs.Process
	done chan struct{} // closed once it was waited for
}

func start(t *testing.T, dir string, args ...string) proc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	p, err := hostfs.Lookup(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return proc{cmd: cmd, p: p, done: done}
}

// wait returns how pr ended, failing the test if it runs past a scaled
// deadline.
func (pr proc) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	select {
	case <-pr.done:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Fatalf("pid %d (%s) still runs %s after it was signalled", pr.p.Pid, pr.p.Comm, testenv.Scale(10*time.Second))
	}
	return pr.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func TestSignalChecksStartTime(t *testing.T) {
	pr := start(t, "/", "sleep", "300")
	stale := pr.p
	stale.Start++ // the process that had this pid before
	if err := stale.Signal(unix.SIGKILL); err != nil {
		t.Fatalf("Signal of a stale process = %v", err)
	}
	// Had the SIGKILL been sent, the process would already be set to die
	// of it (the kernel marks the whole group at send time) and the
	// SIGTERM below would be dropped: how it ends tells, without waiting
	// for a kill that may never come.
	if err := pr.p.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := pr.wait(t); !ws.Signaled() || ws.Signal() != unix.SIGTERM {
		t.Fatalf("Signal(SIGKILL) to pid %d with another start time: the process ended with %q, want killed by the SIGTERM sent after it (the stale SIGKILL reached it)", pr.p.Pid, pr.cmd.ProcessState)
	}
}

func TestKillUnder(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "ws")
	mem := filepath.Join(dir, "mem")
	hostfs.MountTmpfs(t, mem)
	left := filepath.Join(mem, "left")
	os.Mkdir(left, 0o700)
	job := filepath.Join(dir, "job")
	os.Mkdir(job, 0o700)
	inside := start(t, job, "sleep", "300")
	// Working in dir itself, not below it: an operator's shell, say.
	outside := start(t, dir, "sleep", "300")
	// Working on the tmpfs from a mount namespace where it is detached:
	// its cwd reads "/left", not a path under dir.
	orphan := start(t, left, "unshare", "--mount", "--propagation", "private", "sh", "-c", "umount -l "+mem+" && exec sleep 300")
	for deadline := time.Now().Add(testenv.Scale(10 * time.Second)); ; time.Sleep(10 * time.Millisecond) {
		// Once sleep runs, umount is done.
		if q, _ := hostfs.Lookup(orphan.p.Pid); q.Comm == "sleep" {
			if cwd, _, _ := orphan.p.Link("cwd"); cwd != "/left" {
				t.Fatalf("cwd of a process on a detached tmpfs = %q, want /left", cwd)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never detached the tmpfs", orphan.p.Pid)
		}
	}
	killed := hostfs.KillUnder(testenv.Scale(10*time.Second), dir)
	var pids []int
	for _, p := range killed {
		pids = append(pids, p.Pid)
	}
	slices.Sort(pids)
	want := []int{inside.p.Pid, orphan.p.Pid}
	slices.Sort(want)
	if !slices.Equal(pids, want) {
		t.Errorf("KillUnder(%q) killed %v (%+v), want %v (in it, and on its tmpfs seen from another mount namespace)", dir, pids, killed, want)
	}
	if inside.p.Alive() || orphan.p.Alive() {
		t.Errorf("processes under %s alive after KillUnder", dir)
	}
	if !outside.p.Alive() {
		t.Errorf("KillUnder(%q) killed pid %d working in it, not below", dir, outside.p.Pid)
	}
}

func TestProcs(t *testing.T) {
	pr := start(t, "/", "sleep", "301")
	p := pr.p
	ps, err := hostfs.Procs()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ps, func(q hostfs.Process) bool { return q.Pid == p.Pid })
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
	p := start(t, "/", "sh", "-c", "sleep 302 & sleep 303 & wait").p
	var tree []int
	t.Cleanup(func() {
		for _, pid := range tree[min(1, len(tree)):] {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	for deadline := time.Now().Add(testenv.Scale(5 * time.Second)); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if tree, err = p.Tree(); err != nil {
			t.Fatalf("Tree() = %v", err)
		}
		// The shell's children are sh until they exec sleep.
		if len(tree) == 3 && slices.IndexFunc(tree[1:], func(pid int) bool {
			q, _ := hostfs.Lookup(pid)
			return q.Comm != "sleep"
		}) < 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Tree() of a shell running 2 sleeps = %v, want 3 processes, 2 of them sleep", tree)
		}
	}
	if tree[0] != p.Pid {
		t.Errorf("Tree() = %v, want %d first", tree, p.Pid)
	}
	for _, pid := range tree[1:] {
		if q, err := hostfs.Lookup(pid); err != nil || q.PPid != p.Pid || q.Comm != "sleep" {
			t.Errorf("Tree()[%d] = %+v, %v, want a sleep started by %d", pid, q, err, p.Pid)
		}
	}
	stale := p
	stale.Start++
	if got, err := stale.Tree(); err != nil || len(got) != 0 {
		t.Errorf("Tree() of a process that ended = %v, %v, want none", got, err)
	}
}

package cgroup_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/runners/cgroup"
)

func TestDetect(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  cgroup.Version
	}{
		{"unified", []string{"cgroup.controllers"}, cgroup.V2},
		{"v1 with memory and pids", []string{"memory/memory.limit_in_bytes", "pids/pids.max"}, cgroup.V1},
		{"v1 without pids", []string{"memory/memory.limit_in_bytes"}, cgroup.None},
		{"nothing", nil, cgroup.None},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tt.files {
				p := filepath.Join(root, f)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := cgroup.New(root, "x").Version(); got != tt.want {
				t.Errorf("New(%v).Version() = %v, want %v", tt.files, got, tt.want)
			}
		})
	}
}

// TestGroupOnHost uses the host's real cgroups: a process added to a
// group is in it, and removing the group kills it.
func TestGroupOnHost(t *testing.T) {
	m := cgroup.New("/sys/fs/cgroup", "buildgw-test")
	if m.Version() == cgroup.None || os.Geteuid() != 0 {
		t.Skip("needs root and cgroups (v1 or v2); setup runs the tests as root on cgroup hosts")
	}
	t.Cleanup(func() {
		for _, d := range []string{"memory/buildgw-test", "pids/buildgw-test", "buildgw-test"} {
			os.Remove(filepath.Join("/sys/fs/cgroup", d))
		}
	})
	name := fmt.Sprintf("group-%d", os.Getpid())
	g, err := m.Create(name, cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatalf("Create = %v", err)
	}
	holdAndKill(t, g, "buildgw-test/"+name)
}

// TestGroupOnCgroup2 runs the v2 code path against a real cgroup2
// hierarchy mounted for the test (on a v1 host, the unified hierarchy of
// hybrid mode): a group is made, holds a process, and removing it kills
// the process. Controllers already bound to v1 hierarchies are not
// offered in v2, so a limit needing one fails naming it; on a pure v2
// host the limits themselves are set.
func TestGroupOnCgroup2(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount cgroup2; the tests run as root")
	}
	root := t.TempDir()
	if err := unix.Mount("none", root, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mounting cgroup2: %v", err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	m := cgroup.New(root, fmt.Sprintf("buildgw-test-v2-%d", os.Getpid()))
	defer os.Remove(filepath.Join(root, fmt.Sprintf("buildgw-test-v2-%d", os.Getpid())))
	if m.Version() != cgroup.V2 {
		t.Fatalf("New(cgroup2 mount).Version() = %v, want %v", m.Version(), cgroup.V2)
	}
	ctrls, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	have := strings.Fields(string(ctrls))

	limits := []struct {
		name       string
		l          cgroup.Limits
		controller string // what the limit needs; "" none
		file, want string // the setting it writes
	}{
		{"memory", cgroup.Limits{MemoryBytes: 64 << 20}, "memory", "memory.max", "67108864"},
		{"pids", cgroup.Limits{Pids: 16}, "pids", "pids.max", "16"},
	}
	for _, tc := range limits {
		t.Run("limit "+tc.name, func(t *testing.T) {
			g, err := m.Create("limited-"+tc.name, tc.l)
			if !slices.Contains(have, tc.controller) {
				if err == nil || !strings.Contains(err.Error(), "lacks the "+tc.controller+" controller") {
					t.Errorf("Create(%s) on a cgroup2 without %s = %v, want an error naming it", tc.name, tc.controller, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create(%s) = %v", tc.name, err)
			}
			defer g.Remove()
			b, _ := os.ReadFile(filepath.Join(root, fmt.Sprintf("buildgw-test-v2-%d", os.Getpid()), "limited-"+tc.name, tc.file))
			if got := strings.TrimSpace(string(b)); got != tc.want {
				t.Errorf("%s of the group = %q, want %q", tc.file, got, tc.want)
			}
		})
	}

	t.Run("hold and kill", func(t *testing.T) {
		name := "plain"
		g, err := m.Create(name, cgroup.Limits{})
		if err != nil {
			t.Fatalf("Create without limits = %v", err)
		}
		holdAndKill(t, g, fmt.Sprintf("0::/buildgw-test-v2-%d/%s", os.Getpid(), name))
	})
}

// holdAndKill adds a process to g, checks that /proc/PID/cgroup names the
// group (want) and that g.Procs lists it, and that removing g kills the process; a second Remove
// does nothing.
func holdAndKill(t *testing.T, g *cgroup.Group, want string) {
	t.Helper()
	defer g.Remove()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer cmd.Process.Kill()
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add = %v", err)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if !strings.Contains(string(b), want) {
		t.Errorf("/proc/PID/cgroup of an added process = %q, want %s", b, want)
	}
	if got := g.Procs(); !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("Procs() = %v, want the added process %d", got, cmd.Process.Pid)
	}
	if got := g.Exceeded(); got != "" {
		t.Errorf("Exceeded() of an idle group = %q, want none", got)
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("Remove = %v", err)
	}
	select {
	case <-done:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Error("process in a removed group still runs")
	}
	if err := g.Remove(); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
}

// TestRemovePath removes a job's group and the groups below it in every
// hierarchy at once (here the host's v1 pids hierarchy and a cgroup2
// mounted for the test), killing what runs in them, and refuses a path
// that would reach the root group or a top-level one.
func TestRemovePath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root; the tests run as root")
	}
	for _, p := range []string{"/", "/buildgw-dind", "buildgw-dind/job", "/buildgw-dind/../job", "/buildgw-dind/job/"} {
		if err := cgroup.RemovePath(p); err == nil {
			t.Errorf("RemovePath(%q) = nil, want it refused", p)
		}
	}
	v2 := t.TempDir()
	if err := unix.Mount("none", v2, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mounting cgroup2: %v", err)
	}
	defer unix.Unmount(v2, unix.MNT_DETACH)
	top := fmt.Sprintf("buildgw-test-rp-%d", os.Getpid())
	var dirs []string
	var dones []chan struct{}
	for _, h := range []string{"/sys/fs/cgroup/pids", v2} {
		if _, err := os.Stat(h); err != nil {
			continue // a pure v2 host has no v1 pids hierarchy
		}
		sub := filepath.Join(h, top, "job", "sub")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(h, top))
		dirs = append(dirs, filepath.Join(h, top, "job"))
		cmd := exec.Command("sleep", "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		defer cmd.Process.Kill()
		dones = append(dones, done)
		if err := os.WriteFile(filepath.Join(sub, "cgroup.procs"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := cgroup.RemovePath("/" + top + "/job"); err != nil {
		t.Fatalf("RemovePath = %v", err)
	}
	for i, done := range dones {
		select {
		case <-done:
		case <-time.After(testenv.Scale(10 * time.Second)):
			t.Errorf("process in %s survived RemovePath", dirs[i])
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("RemovePath left %s", d)
		}
		if _, err := os.Stat(filepath.Dir(d)); err != nil {
			t.Errorf("RemovePath removed the parent %s too: %v", filepath.Dir(d), err)
		}
	}
}

// TestRemoveSlowExit: a killed process that takes longer than a few
// seconds to exit (here it is frozen for 6 s; on a saturated host, a
// niced sandbox waiting for CPU to run its exit) is put back at nice 0
// and waited for, and its group is removed. Before, teardown gave up
// after 5 s and left the process and the group.
func TestRemoveSlowExit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root; the tests run as root")
	}
	top := fmt.Sprintf("buildgw-test-slow-%d", os.Getpid())
	job := filepath.Join("/sys/fs/cgroup/pids", top, "job")
	frz := filepath.Join("/sys/fs/cgroup/freezer", top)
	for _, d := range []string{job, frz} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer os.Remove(filepath.Dir(job))
	defer os.Remove(frz)
	cmd := exec.Command("nice", "-n", "19", "sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	for _, d := range []string{job, frz} {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	thaw := func() { os.WriteFile(filepath.Join(frz, "freezer.state"), []byte("THAWED"), 0o644) }
	defer thaw()
	// Frozen once nice has exec'd sleep at nice 19.
	waitFor(t, "sleep at nice 19", func() bool { return niceOf(pid) == 19 && commOf(pid) == "sleep" })
	if err := os.WriteFile(filepath.Join(frz, "freezer.state"), []byte("FROZEN"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "frozen", func() bool {
		b, _ := os.ReadFile(filepath.Join(frz, "freezer.state"))
		return strings.TrimSpace(string(b)) == "FROZEN"
	})

	start := time.Now()
	removed := make(chan error, 1)
	go func() { removed <- cgroup.RemovePath("/" + top + "/job") }()
	waitFor(t, "the killed process back at nice 0", func() bool { return niceOf(pid) == 0 })
	// The process can exit 6 s after the kill, later than the old bound.
	time.Sleep(6*time.Second - time.Since(start))
	select {
	case err := <-removed:
		t.Fatalf("RemovePath returned %v while its killed process was still exiting, want it to wait", err)
	default:
	}
	thaw()
	select {
	case err := <-removed:
		if err != nil {
			t.Errorf("RemovePath = %v, want nil once the process exited", err)
		}
	case <-time.After(testenv.Scale(time.Minute)):
		t.Fatal("RemovePath still waiting a minute after its process could exit")
	}
	select {
	case <-done:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Error("killed process still runs after RemovePath")
	}
	if _, err := os.Stat(job); err == nil {
		t.Errorf("RemovePath left %s", job)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(testenv.Scale(10 * time.Second)); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: timed out", what)
		}
	}
}

// niceOf reads pid's nice value from /proc/PID/stat (-100 if unreadable).
func niceOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -100
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 17 {
		return -100
	}
	n, err := strconv.Atoi(f[16])
	if err != nil {
		return -100
	}
	return n
}

func commOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

package cgroup_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	if !strings.Contains(string(b), "buildgw-test/"+name) {
		t.Errorf("/proc/PID/cgroup of an added process = %q, want buildgw-test/%s", b, name)
	}
	if got := g.Exceeded(); got != "" {
		t.Errorf("Exceeded() of an idle group = %q, want none", got)
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("Remove = %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("process in a removed group still runs")
	}
	if err := g.Remove(); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
}

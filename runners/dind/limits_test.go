package dind

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/internal/testenv"
)

// TestLimits runs a process storm, a memory hog and a normal build under
// WithLimits: in the first two, the RUN container below the daemon is
// refused a fork, or killed, and the build fails; the third shows the
// daemon itself in the job's group. No process or group is left after
// any of them.
func TestLimits(t *testing.T) {
	r := requireDocker(t, WithLimits(256<<20, 200))
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)

	var groups []string // each build's job group
	testHookBeforeStop = func(d *Daemon) {
		groups = append(groups, d.cgroup)
		// The namespace's init and dockerd, both naming the job's
		// directory, are in the daemon's leaf of the job's group.
		ps := referencing(d.dir)
		if len(ps) < 2 {
			t.Errorf("processes naming %s = %v, want the init and dockerd", d.dir, ps)
		}
		for _, p := range ps {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid))
			if err != nil {
				t.Errorf("reading the cgroups of %d: %v", p.Pid, err)
				continue
			}
			for _, c := range []string{"memory", "pids"} {
				if want := ":" + c + ":" + d.cgroup + "/daemon\n"; !strings.Contains(string(b), want) {
					t.Errorf("cgroups of %d %q = %q, want %q", p.Pid, p.Args(), b, want)
				}
			}
		}
	}
	t.Cleanup(func() { testHookBeforeStop = nil })

	// Each bounded, so that a host without working limits suffers little:
	// awk doubles a string to 256 MiB (about 400 MiB at its peak), the
	// loop starts 400 sleeps of 30s.
	tests := []struct {
		name, run string
		wantLog   string // "": the build succeeds
	}{
		// busybox's sh, refused a fork (EAGAIN), gives up at once.
		{"process storm", `i=0; while [ $i -lt 400 ]; do sleep 30 & i=$((i+1)); done; wait`, "can't fork: Resource temporarily unavailable"},
		// awk, the largest process, is killed (SIGKILL: 128+9).
		{"memory hog", `awk 'BEGIN { s = "x"; while (length(s) < 200000000) s = s s; print length(s) }'`, "exit code: 137"},
		{"normal build", "echo fine > /fine", ""},
	}
	for _, tc := range tests {
		groups = nil
		req := newRequest(t, reg, map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN " + tc.run + "\n"}, map[string]string{"BASE": base})
		var log strings.Builder
		_, err := r.Build(context.Background(), req, &log)
		switch {
		case tc.wantLog == "" && err != nil:
			t.Errorf("Build(%s) = %v, want success; log:\n%s", tc.name, err, log.String())
		case tc.wantLog != "" && (err == nil || !strings.Contains(log.String(), tc.wantLog)):
			t.Errorf("Build(%s) = %v, want it failed with %q in its log; log:\n%s", tc.name, err, tc.wantLog, log.String())
		}
		if tc.wantLog == "" && len(groups) != 1 {
			t.Errorf("Build(%s) stopped %d daemons before the hook, want 1", tc.name, len(groups))
		}
		if left := referencing(req.Workspace); len(left) > 0 {
			t.Errorf("Build(%s) left processes: %v", tc.name, left)
		}
		// The job's group is named after it, with a random suffix, in
		// every hierarchy.
		name := cgroupName(req.ID)
		for _, h := range cgroupDirs(t, DefaultCgroupRoot) {
			if left, _ := filepath.Glob(filepath.Join(h, name[:len(name)-12]+"*")); len(left) > 0 {
				t.Errorf("Build(%s) left cgroups %q", tc.name, left)
			}
		}
	}
}

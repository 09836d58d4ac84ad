package gateway_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestStartReapsDindLeftovers: a gateway starting where a killed one left
// a dind job with its daemon still running has the dind runner reap it
// (through the jobs Manager's recovery) before the job's workspace is
// removed: the daemon, found only through its state file in the
// workspace, is killed, and then the workspace is gone.
func TestStartReapsDindLeftovers(t *testing.T) {
	testenv.RequireSandbox(t)
	cfg := testConfig(t, "bgw_test_reap", allPolicy)
	stopped(t, cfg)

	// The daemon namespace's init, as the runner records it: pid and
	// start time in dind/state.json. Neither its command line nor its
	// working directory names the workspace, so only the state file leads
	// to it.
	daemon := exec.Command("sleep", "600")
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { daemon.Wait(); close(exited) }()
	t.Cleanup(func() { daemon.Process.Kill(); <-exited })
	ws := filepath.Join(cfg.StateDir, "jobs", "crashed")
	if err := os.MkdirAll(filepath.Join(ws, "dind"), 0o700); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(map[string]any{"pid": daemon.Process.Pid, "start": startTime(t, daemon.Process.Pid)})
	writeFile(t, filepath.Join(ws, "dind", "state.json"), string(st))

	g, err := gateway.New(cfg, discard())
	if err != nil {
		t.Fatalf("gateway.New = %v", err)
	}
	serve(t, g)
	select {
	case <-exited:
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Errorf("the dind daemon a killed gateway left still runs after the next gateway started")
	}
	if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace of the job the killed gateway left: Stat = %v, want it gone", err)
	}
}

// startTime is field 22 of /proc/PID/stat: when the process started, in
// clock ticks after boot.
func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

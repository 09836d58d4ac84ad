package runnertest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// testSignals checks that a build can signal nothing of the host: not by
// number, and not with kill(-1), which reaches every process the sender may
// signal. The target is a host process running as the very user the
// sandbox runs as (its permission check would pass), so only the sandbox's
// own pid namespace stands between them.
func (s *suite) testSignals(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)

	victim := exec.Command("sleep", "3600")
	if o, ok := r.(Owner); ok {
		if uid, gid, differs := o.Owner(); differs {
			victim.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
	}
	if err := victim.Start(); err != nil {
		t.Fatalf("starting the host process: %v", err)
	}
	died := make(chan error, 1)
	go func() { died <- victim.Wait() }()
	t.Cleanup(func() {
		victim.Process.Kill()
		<-died
	})
	pid := strconv.Itoa(victim.Process.Pid)

	// kill(-1) also reaches the RUN step's own ancestors in the sandbox;
	// the build may fail for that, but nothing outside may die.
	st := s.newSetup(t, r, job{
		files: map[string]string{"Dockerfile": `ARG BASE
FROM ${BASE}
ARG VICTIM
RUN if kill -0 "$VICTIM" 2>/dev/null; then echo visible; else echo invisible; fi > /by-number; \
    kill -9 "$VICTIM" 2>/dev/null; kill -9 -1 2>/dev/null; true
`},
		args: map[string]string{"VICTIM": pid},
	})
	img, log, err := build(t, t.Context(), r, st.req)

	select {
	case err := <-died:
		t.Fatalf("the host process (pid %s, the sandbox's user) died during the build: %v", pid, err)
	default:
	}
	if err := victim.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the host process (pid %s) is gone after the build: %v", pid, err)
	}
	if err != nil {
		// A sandbox whose own init the step killed: acceptable, as long
		// as the host is untouched (checked above).
		t.Logf("Build() = %v (the step signalled its own sandbox)\n%s", err, log.String())
		return
	}
	fsys := files(t, img)
	if got := strings.TrimSpace(fsys["/by-number"].body); got != "invisible" {
		t.Errorf("host pid %s seen from a RUN step: /by-number = %q, want %q", pid, got, "invisible")
	}
	if _, err := os.Stat("/proc/" + pid); err != nil {
		t.Errorf("host process %s: %v", pid, err)
	}
}

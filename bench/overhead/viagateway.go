package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
)

// (b): buildctl-lite against the gateway

type gwRun struct {
	wall   time.Duration // start of buildctl-lite to the digest on its stdout
	upload time.Duration // start to the gateway's "build accepted"
	build  time.Duration // the gateway's "build started" to "build finished"
	gwHWM  int64
}

func (e *env) viaGateway(ctx context.Context, tag string) (*gwRun, error) {
	e.counter++
	pid := e.gw.Cmd.Process.Pid
	reset := bu.ResetHWM(pid)
	logPath := filepath.Join(e.logs, fmt.Sprintf("gw-%d.log", e.counter))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	args := []string{"submit", "-t", tag, "--build-arg", "BASE=" + e.base}
	if !e.c.cache {
		// Every (b) builds the same project: with the caches, all but the
		// first would be answered from the tenant's result cache.
		args = append(args, "--no-cache")
	}
	cmd := exec.CommandContext(ctx, e.ctl, append(args, e.proj.Dir)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "BUILDGW_URL=" + e.url, "BUILDGW_TOKEN=" + e.token}
	// Stamped with the time since the start, for finding where the time
	// goes.
	stamped := &bu.StampWriter{W: lf}
	cmd.Stderr = stamped
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	stamped.T0 = start
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var digest string
	var digestAt time.Time
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "sha256:") {
			digest, digestAt = l, time.Now()
		}
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("buildctl-lite: %v; log %s ends:\n%s", err, logPath, bu.Tail(logPath, 15))
	}
	if digest == "" {
		return nil, fmt.Errorf("buildctl-lite printed no digest; see %s", logPath)
	}
	r := &gwRun{wall: digestAt.Sub(start)}
	if m, err := bu.ReadMem(pid); err == nil {
		r.gwHWM = m.HWM
	}
	if !reset {
		r.gwHWM = 0
	}
	// Phases from the gateway's own log.
	if id := jobID(logPath); id != "" {
		// The gateway logs "build finished" just after it reports the
		// result, so it may not be written yet.
		acc, started, finished := gatewayPhases(e.gwLog, id)
		for deadline := time.Now().Add(2 * time.Second); finished.IsZero() && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			acc, started, finished = gatewayPhases(e.gwLog, id)
		}
		if !acc.IsZero() {
			r.upload = acc.Sub(start)
		}
		if !started.IsZero() && !finished.IsZero() {
			r.build = finished.Sub(started)
		}
	}
	return r, nil
}

// jobID finds "build ID queued" in buildctl-lite's stderr (stamped).
func jobID(logPath string) string {
	b, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(string(b), "\n") {
		if _, rest, ok := strings.Cut(l, "] "); ok && strings.HasPrefix(l, "[") {
			l = rest
		}
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "build" && f[2] == "queued" {
			return f[1]
		}
	}
	return ""
}

// gatewayPhases reads the times of a job's accepted, started and finished
// lines from the gateway's JSON log.
func gatewayPhases(logPath, id string) (accepted, started, finished time.Time) {
	f, err := os.Open(logPath)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
			Job  string    `json:"job"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Job != id {
			continue
		}
		switch l.Msg {
		case "build accepted":
			accepted = l.Time
		case "build started":
			started = l.Time
		case "build finished":
			finished = l.Time
		}
	}
	return
}

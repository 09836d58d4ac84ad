package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
)

func (e *env) startGateway(ctx context.Context, bin string) error {
	state := filepath.Join(e.tmp, "gw")
	e.gwLog = filepath.Join(e.logs, "gateway.log")
	lf, err := os.Create(e.gwLog)
	if err != nil {
		return err
	}
	ws := "disk"
	if e.memory {
		ws = "memory"
	}
	cmd := exec.Command(bin, "serve", "--dev", "--state-dir", state, "--executor", e.exe, "--workspaces", ws)
	cmd.Stdout = lf
	cmd.Stderr = lf
	if e.c.verbose {
		cmd.Stderr = io.MultiWriter(lf, os.Stderr)
	}
	e.gw, err = bu.StartDaemon(cmd)
	lf.Close()
	if err != nil {
		return fmt.Errorf("starting gateway: %w", err)
	}
	envFile := filepath.Join(state, "dev.env")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(envFile); err == nil && len(b) > 0 {
			for _, l := range strings.Split(string(b), "\n") {
				k, v, _ := strings.Cut(l, "=")
				switch k {
				case "BUILDGW_URL":
					e.url = v
				case "BUILDGW_TOKEN":
					e.token = v
				case "BUILDGW_REGISTRY":
					e.reg = v
				case "BUILDGW_REGISTRY_USER":
					e.regUser = v
				case "BUILDGW_REGISTRY_PASSWORD":
					e.regPassword = v
				}
			}
			break
		}
		if e.gw.Exited() {
			return fmt.Errorf("gateway exited:\n%s", bu.Tail(e.gwLog, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway wrote no %s within 60s:\n%s", envFile, bu.Tail(e.gwLog, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if e.url == "" || e.token == "" || e.reg == "" || e.regUser == "" {
		return fmt.Errorf("incomplete %s", envFile)
	}
	bu.Log.Printf("dev gateway pid %d at %s, registry %s", e.gw.Cmd.Process.Pid, e.url, e.reg)
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/baseimage"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testgateway"
)

// startGateway starts bin (internal/testgateway, binary mode) with its
// own registry, and pushes the busybox base image to that registry.
func (e *env) startGateway(ctx context.Context, bin string) error {
	e.gwLog = filepath.Join(e.logs, "gateway.log")
	lf, err := os.Create(e.gwLog)
	if err != nil {
		return err
	}
	var out io.Writer = lf
	if e.c.verbose {
		out = io.MultiWriter(lf, os.Stderr)
	}
	cfg := gateway.DefaultConfig()
	cfg.StateDir = filepath.Join(e.tmp, "gw", "state")
	if err := os.MkdirAll(filepath.Dir(cfg.StateDir), 0o711); err != nil {
		return err
	}
	cfg.Workspaces = "disk"
	if e.memory {
		cfg.Workspaces = "memory"
	}
	cfg.Runners.Kaniko.Executor = e.exe
	e.gw, err = testgateway.Launch(ctx, cfg, testgateway.WithBinary(bin), testgateway.WithOutput(out))
	if err != nil {
		lf.Close()
		return fmt.Errorf("starting gateway: %w", err)
	}
	e.gwLogFile = lf
	e.url, e.token, e.reg = e.gw.URL, e.gw.Token, e.gw.Registry
	// (a) still gets plain kaniko's Docker config with an account, as a CI
	// job would; the registry is open to loopback and ignores it.
	e.regUser, e.regPassword = "bench", "unused"
	bu.Log.Printf("gateway pid %d at %s, registry %s", e.gw.Cmd.Process.Pid, e.url, e.reg)

	e.base = e.reg + "/library/busybox:latest"
	img, err := baseimage.Busybox(e.c.busybox)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(e.base, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("pushing busybox to %s: %w", e.reg, err)
	}
	bu.Log.Printf("base image %s", e.base)
	return nil
}

// stopGateway stops the gateway and its registry.
func (e *env) stopGateway() {
	if err := e.gw.Stop(); err != nil {
		bu.Log.Printf("gateway: %v", err)
	}
	e.gwLogFile.Close()
}

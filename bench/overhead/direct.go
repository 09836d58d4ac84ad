package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/runners/kaniko/sandbox"
)

// (a): the executor in the runner's sandbox, pushing by itself

// workspace is one job's directory, laid out as the gateway lays it out.
type workspace struct{ ws, ctxDir, out, root string }

// newWorkspace makes a workspace as the gateway's Manager and the runner's
// prepareRoot do, with an empty context directory.
func (e *env) newWorkspace() (*workspace, error) {
	e.counter++
	ws := filepath.Join(e.tmp, "direct", strconv.Itoa(e.counter))
	if err := os.MkdirAll(filepath.Dir(ws), 0o711); err != nil {
		return nil, err
	}
	w := &workspace{ws: ws, ctxDir: filepath.Join(ws, "context"), out: filepath.Join(ws, "out"), root: filepath.Join(ws, "root")}
	for _, d := range []struct {
		p    string
		mode os.FileMode
	}{{w.ws, 0o700}, {w.ctxDir, 0o755}, {w.out, 0o700}} {
		if err := os.Mkdir(d.p, d.mode); err != nil {
			return nil, err
		}
		if err := e.chown(d.p); err != nil {
			return nil, err
		}
	}
	if err := e.prepareRoot(w.root); err != nil {
		return nil, err
	}
	return w, nil
}

// direct prepares a workspace as the runner does, copies the context in,
// then times only the sandboxed executor run, kaniko pushing to tag by
// itself. It returns the executor's peak RSS (ru_maxrss of unshare, which
// covers the executor it waited for).
func (e *env) direct(ctx context.Context, tag string, flags []string) (time.Duration, int64, error) {
	w, err := e.newWorkspace()
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(w.ws)
	start := time.Now()
	if err := e.copyTree(e.proj.Dir, w.ctxDir); err != nil {
		return 0, 0, fmt.Errorf("copying the context: %w", err)
	}
	e.lastCopy = time.Since(start)
	kargs := []string{"--destination=" + tag, "--insecure"}
	return e.executor(ctx, w, append(kargs, flags...))
}

// executor runs the kaniko executor in w's sandbox exactly as
// runners/kaniko Build does (same unshare flags, executor, environment and
// process attributes, same leading kaniko flags), followed by kargs, and
// times it.
// sandboxNice is the niceness runners/kaniko gives sandboxes by default.
const sandboxNice = 19

func (e *env) executor(ctx context.Context, w *workspace, kargs []string) (time.Duration, int64, error) {
	args := []string{
		"--user", "--map-root-user", "--map-auto", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
		"--", e.executorFor(w.root),
		"--context=dir://" + sandbox.Workspace,
		"--dockerfile=" + path.Join(sandbox.Workspace, "Dockerfile"),
		"--force",
		"--log-format=text",
		"--log-timestamp=false",
		"--build-arg=BASE=" + e.base,
		"--insecure-registry=" + e.reg,
	}
	args = append(args, kargs...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Dir = w.root
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"DOCKER_CONFIG=/kaniko/.docker",
		"SSL_CERT_DIR=/kaniko/ssl/certs",
		sandbox.EnvRoot + "=" + w.root,
		sandbox.EnvContext + "=" + w.ctxDir,
		sandbox.EnvOutput + "=" + w.out,
	}
	if e.bind {
		cmd.Env = append(cmd.Env, sandbox.EnvExecutor+"="+e.exe)
	}
	logPath := filepath.Join(e.logs, fmt.Sprintf("direct-%d.log", e.counter))
	lf, err := os.Create(logPath)
	if err != nil {
		return 0, 0, err
	}
	defer lf.Close()
	stamped := &bu.StampWriter{W: lf}
	cmd.Stdout, cmd.Stderr = stamped, stamped
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL, Credential: e.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second

	start := time.Now()
	stamped.T0 = start
	err = cmd.Start()
	if err == nil {
		// At the runner's niceness: the gateway runs every sandbox at
		// niceness 19, so that builds yield to the gateway's own work.
		unix.Setpriority(unix.PRIO_PGRP, cmd.Process.Pid, sandboxNice)
		err = cmd.Wait()
	}
	d := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return 0, 0, fmt.Errorf("executor: %v; log %s ends:\n%s", err, logPath, bu.Tail(logPath, 15))
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // KiB on Linux
	}
	return d, rss, nil
}

func (e *env) chown(p string) error {
	if e.cred == nil {
		return nil
	}
	return os.Lchown(p, int(e.cred.Uid), int(e.cred.Gid))
}

// executorFor is the program the sandbox of root starts, as in
// runners/kaniko.
func (e *env) executorFor(root string) string {
	if e.bind {
		return e.exe
	}
	return filepath.Join(root, "kaniko", "executor")
}

// prepareRoot lays out the job root as runners/kaniko prepareRoot does.
func (e *env) prepareRoot(root string) error {
	for _, d := range []string{"", "dev", "proc", "workspace", ".oldroot", "kaniko", "kaniko/out", "kaniko/ssl", "kaniko/ssl/certs", "kaniko/.docker"} {
		p := filepath.Join(root, d)
		if err := os.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("preparing job root: %w", err)
		}
		if err := e.chown(p); err != nil {
			return err
		}
	}
	// As in the runner: bound over an empty file in the sandbox
	// (sandbox.EnvExecutor) when the sandbox user can reach it, else a
	// hard link (root) or a copy.
	exe := filepath.Join(root, "kaniko", "executor")
	switch {
	case e.bind:
		if err := os.WriteFile(exe, nil, 0o755); err != nil {
			return fmt.Errorf("installing executor: %w", err)
		}
	case e.cred != nil && os.Link(e.exe, exe) == nil:
	default:
		if err := copyFile(e.exe, exe, 0o755); err != nil {
			return fmt.Errorf("installing executor: %w", err)
		}
	}
	if err := copyFile(e.c.caCerts, filepath.Join(root, "kaniko", "ssl", "certs", "ca-certificates.crt"), 0o644); err != nil {
		return fmt.Errorf("installing CA certificates: %w", err)
	}
	// Plain kaniko's way to the push account (and the embedded
	// registry's only account): a Docker config in the sandbox.
	auth := base64.StdEncoding.EncodeToString([]byte(e.regUser + ":" + e.regPassword))
	dc, err := json.Marshal(map[string]any{"auths": map[string]any{e.reg: map[string]string{"auth": auth}}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "kaniko", ".docker", "config.json"), dc, 0o644); err != nil {
		return fmt.Errorf("installing Docker config: %w", err)
	}
	return nil
}

// copyTree copies the project into the context directory, owned by the
// sandbox user, as the gateway's extraction leaves it.
func (e *env) copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if err := os.Mkdir(target, fi.Mode().Perm()); err != nil {
				return err
			}
		} else if err := copyFile(p, target, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := e.chown(target); err != nil {
			return err
		}
		mt := fi.ModTime().Truncate(time.Second)
		return os.Chtimes(target, mt, mt)
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

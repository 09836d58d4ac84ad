package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/archive"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/sandbox"
)

// (a): the executor in the runner's sandbox, pushing by itself

// jobDir is one job's workspace, laid out as the gateway lays it out.
type jobDir struct{ ws, ctxDir, out, root string }

// newWorkspace makes a workspace as the gateway's Manager and the runner's
// prepareRoot do, with an empty context directory.
func (e *env) newWorkspace() (*jobDir, error) {
	e.counter++
	ws, err := e.spaces.Create(strconv.Itoa(e.counter), archive.Limits{})
	if err != nil {
		return nil, err
	}
	w := &jobDir{ws: ws, ctxDir: filepath.Join(ws, "context"), out: filepath.Join(ws, "out"), root: filepath.Join(ws, "root")}
	for _, d := range []struct {
		p    string
		mode os.FileMode
	}{{w.ctxDir, 0o755}, {w.out, 0o700}} {
		if err := os.Mkdir(d.p, d.mode); err != nil {
			return nil, err
		}
	}
	for _, p := range []string{w.ws, w.ctxDir, w.out} {
		if err := e.chown(p); err != nil {
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
	defer e.spaces.Remove(context.Background(), w.ws, nil)
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

func (e *env) executor(ctx context.Context, w *jobDir, kargs []string) (time.Duration, int64, error) {
	args := []string{
		"--user", "--map-root-user", "--map-auto", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
		"--", e.jobRoot(w.root).Start(),
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
		"DOCKER_CONFIG=" + sandbox.DockerConfig,
		"SSL_CERT_DIR=" + sandbox.CertDir,
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

// jobRoot is the job root at root, laid out as runners/kaniko lays out
// its own.
func (e *env) jobRoot(root string) sandbox.Root {
	return sandbox.Root{Dir: root, Owner: e.cred, Executor: e.exe, BindExecutor: e.bind, SystemCAs: e.c.caCerts}
}

// prepareRoot lays out the job root as runners/kaniko does, plus a Docker
// config: unlike the runner, plain kaniko pushes by itself.
func (e *env) prepareRoot(root string) error {
	jr := e.jobRoot(root)
	if err := jr.Prepare(); err != nil {
		return err
	}
	// Plain kaniko's way to the push account (and the embedded
	// registry's only account): a Docker config in the sandbox.
	auth := base64.StdEncoding.EncodeToString([]byte(e.regUser + ":" + e.regPassword))
	dc, err := json.Marshal(map[string]any{"auths": map[string]any{e.reg: map[string]string{"auth": auth}}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(jr.Path(sandbox.DockerConfig), "config.json"), dc, 0o644); err != nil {
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
		} else if err := sandbox.CopyFile(p, target, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := e.chown(target); err != nil {
			return err
		}
		mt := fi.ModTime().Truncate(time.Second)
		return os.Chtimes(target, mt, mt)
	})
}

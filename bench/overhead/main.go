// Command overhead measures what the gateway adds to a build: the same
// reference project built (a) by the kaniko executor run directly in the
// runner's sandbox, pushing by itself, and (b) through buildctl-lite and a
// dev-mode gateway. With -kaniko-flags it instead compares kaniko flag sets
// on (a) and checks that each produces a correct image.
//
//	go run ./bench/overhead -n 5
//	go run ./bench/overhead -n 3 -kaniko-flags
//
// See bench/README.md.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/archive"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/buildcontext"
	"github.com/buildgw/buildgw/ocilayout"
	"github.com/buildgw/buildgw/push"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/runners/kaniko/sandbox"
	"github.com/buildgw/buildgw/workspace"
)

// defaultFlagSets are the kaniko flag sets -kaniko-flags compares, checked
// against kaniko v1.24.0's cmd/executor/cmd/root.go.
var defaultFlagSets = []string{
	"",
	"--snapshot-mode=redo",
	"--snapshot-mode=time",
	"--use-new-run",
	"--compressed-caching=false",
	"--single-snapshot",
	"--compression-level=1",
	"--compression=zstd",
}

type config struct {
	n, warmup  int
	flagMode   bool
	phaseMode  bool
	flagSets   string
	bin        string
	busybox    string
	user       string
	caCerts    string
	work       string
	keep       bool
	verbose    bool
	files      int
	bytes      int64
	genFiles   int
	seed       uint64
	skipVerify bool
	cache      bool
	workspaces string
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 5, "measured runs (per flag set with -kaniko-flags)")
	flag.IntVar(&c.warmup, "warmup", 1, "uncounted warm-up runs before the measured ones")
	flag.BoolVar(&c.flagMode, "kaniko-flags", false, "compare kaniko flag sets on (a) instead of (a) vs (b)")
	flag.BoolVar(&c.phaseMode, "phases", false, "time the gateway's phases one by one, in process, with the product's own packages (diagnosis)")
	flag.StringVar(&c.flagSets, "flag-sets", "", "with -kaniko-flags: flag sets separated by ';', e.g. 'none;--use-new-run --snapshot-mode=redo' (default: the built-in candidates)")
	flag.StringVar(&c.bin, "bin", "bin", "directory holding buildgw, buildctl-lite and kaniko-executor (scripts/setup builds them)")
	flag.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox binary for the base image")
	flag.StringVar(&c.user, "sandbox-user", "buildgw-sandbox", "user (a) runs the sandbox as when running as root, like the runner")
	flag.StringVar(&c.caCerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle copied into the sandbox, like the runner")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR or /tmp)")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs, project) for inspection")
	flag.BoolVar(&c.verbose, "v", false, "also copy the gateway's log to stderr")
	flag.IntVar(&c.files, "files", 1500, "files in the reference project")
	flag.Int64Var(&c.bytes, "bytes", 30<<20, "total bytes of the reference project")
	flag.IntVar(&c.genFiles, "gen-files", 2000, "files the Dockerfile's RUN writes")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the reference project")
	flag.BoolVar(&c.skipVerify, "skip-verify", false, "do not pull images back to check them")
	flag.StringVar(&c.workspaces, "workspaces", "auto", "where workspaces live, for (a) and the gateway of (b) alike: memory (a tmpfs; needs root), disk, or auto (memory as root, as the gateway's default)")
	flag.BoolVar(&c.cache, "cache", false, "let (b) use the gateway's caches (by default it submits with --no-cache, so that both sides build cold)")
	flag.Parse()
	if c.flagMode && c.phaseMode {
		fmt.Fprintln(os.Stderr, "overhead: -kaniko-flags and -phases exclude each other")
		os.Exit(2)
	}
	if c.n < 1 || c.warmup < 0 || c.files < 10 || c.bytes < int64(c.files) {
		fmt.Fprintln(os.Stderr, "overhead: -n must be >= 1, -warmup >= 0, -files >= 10, -bytes >= -files")
		os.Exit(2)
	}
	bu.Main("overhead", func(ctx context.Context) error { return run(ctx, &c) })
}

// env is everything a run needs.
type env struct {
	c       *config
	tmp     string
	spaces  *workspace.Workspaces // (a)'s workspaces, placed as the gateway places (b)'s
	logs    string
	exe     string // absolute path of kaniko-executor
	ctl     string // absolute path of buildctl-lite
	cred    *syscall.Credential
	proj    *refproject.Project
	gw      *bu.Daemon
	gwLog   string
	url     string
	token   string
	reg     string
	base    string
	counter int
	// bind: the executor is bound into the sandbox, as the runner does
	// when the sandbox user can reach it.
	bind bool
	// memory: workspaces on a tmpfs, (a)'s mounted by the benchmark, (b)'s
	// by the gateway.
	memory bool
	// lastCopy is how long direct's (untimed) copy of the context took.
	lastCopy time.Duration
	// regUser and regPassword are the embedded registry's account.
	regUser, regPassword string
}

func run(ctx context.Context, c *config) (err error) {
	root, err := bu.ModuleRoot()
	if err != nil {
		return err
	}
	binDir := c.bin
	if !filepath.IsAbs(binDir) {
		binDir = filepath.Join(root, binDir)
	}
	e := &env{c: c, exe: filepath.Join(binDir, "kaniko-executor"), ctl: filepath.Join(binDir, "buildctl-lite")}
	gwBin := filepath.Join(binDir, "buildgw")
	for _, b := range []string{e.exe, e.ctl, gwBin} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s missing: run scripts/setup first", b)
		}
	}
	for _, b := range []string{"unshare", "newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found: run scripts/setup (it installs uidmap)", b)
		}
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(c.user)
		if err != nil {
			return fmt.Errorf("sandbox user %s: %w (run scripts/setup)", c.user, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		e.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		e.bind = kaniko.ExecutableBy(e.exe, uid, gid)
	}

	e.tmp, err = os.MkdirTemp(c.work, "buildgw-bench-overhead-")
	if err != nil {
		return err
	}
	defer func() {
		if c.keep {
			bu.Log.Printf("kept %s", e.tmp)
			return
		}
		if rerr := os.RemoveAll(e.tmp); rerr != nil {
			bu.Log.Printf("removing %s: %v", e.tmp, rerr)
		}
	}()
	// The sandbox user must be able to reach its workspaces, as under a
	// gateway's state directory.
	if err := os.Chmod(e.tmp, 0o711); err != nil {
		return err
	}
	e.logs = filepath.Join(e.tmp, "logs")
	if err := os.Mkdir(e.logs, 0o700); err != nil {
		return err
	}
	switch c.workspaces {
	case "memory":
		e.memory = true
	case "auto":
		e.memory = os.Geteuid() == 0
	case "disk":
	default:
		return fmt.Errorf("-workspaces %q: want auto, memory or disk", c.workspaces)
	}
	// (a)'s workspaces in memory or on disk, as the gateway keeps (b)'s.
	var wsOpts []workspace.Option
	if e.memory {
		wsOpts = append(wsOpts, workspace.WithMemory(4<<30))
	}
	e.spaces, err = workspace.New(workspace.NewLayout(filepath.Join(e.tmp, "direct")), wsOpts...)
	if err != nil {
		return fmt.Errorf("preparing (a)'s workspaces: %w", err)
	}
	defer e.spaces.Close()
	bu.Log.Printf("workspaces in memory: %v", e.memory)

	bu.Log.Printf("generating the reference project (%d files, %s MiB) in %s", c.files, bu.MiB(c.bytes), e.tmp)
	e.proj, err = refproject.Generate(filepath.Join(e.tmp, "project"), c.files, c.bytes, c.seed, c.genFiles)
	if err != nil {
		return fmt.Errorf("generating project: %w", err)
	}
	bu.Log.Printf("project: %d files, %d bytes, %.0f%% of them random (incompressible)", len(e.proj.Files), e.proj.Total, 100*float64(e.proj.RandomBytes)/float64(e.proj.Total))

	if err := e.startGateway(ctx, gwBin); err != nil {
		return err
	}
	defer e.gw.Stop(20 * time.Second)

	e.base = e.reg + "/library/busybox:latest"
	imp := exec.CommandContext(ctx, gwBin, "import", "--busybox", c.busybox, e.base)
	imp.Env = append(os.Environ(), "BUILDGW_REGISTRY="+e.reg, "BUILDGW_REGISTRY_USER="+e.regUser, "BUILDGW_REGISTRY_PASSWORD="+e.regPassword)
	if out, err := imp.CombinedOutput(); err != nil {
		return fmt.Errorf("importing busybox: %v: %s", err, out)
	}
	bu.Log.Printf("base image %s", e.base)

	if c.flagMode {
		return e.flagBench(ctx)
	}
	if c.phaseMode {
		return e.phaseBench(ctx)
	}
	return e.overheadBench(ctx)
}

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

// ---------------------------------------------------------------------
// (a) vs (b)

type abRun struct {
	order    string
	a, b     time.Duration
	exeRSS   int64 // executor's peak RSS in (a), bytes
	gwHWM    int64 // gateway's VmHWM during (b), bytes
	upload   time.Duration
	build    time.Duration
	aOK, bOK string
}

func (e *env) overheadBench(ctx context.Context) error {
	c := e.c
	var runs []abRun
	total := c.warmup + c.n
	for i := 0; i < total; i++ {
		warm := i < c.warmup
		k := i - c.warmup + 1
		label := fmt.Sprintf("run %d/%d", k, c.n)
		if warm {
			label = fmt.Sprintf("warm-up %d/%d", i+1, c.warmup)
		}
		r := abRun{order: "a,b"}
		if i%2 == 1 {
			r.order = "b,a"
		}
		aTag := fmt.Sprintf("%s/bench/direct:%d", e.reg, i)
		bTag := fmt.Sprintf("%s/bench/gw:%d", e.reg, i)
		for _, which := range strings.Split(r.order, ",") {
			if err := ctx.Err(); err != nil {
				return err
			}
			syscall.Sync() // start each build without the previous one's dirty pages
			if which == "a" {
				d, rss, err := e.direct(ctx, aTag, nil)
				if err != nil {
					return fmt.Errorf("%s (a): %w", label, err)
				}
				r.a, r.exeRSS = d, rss
				bu.Log.Printf("%s (a) direct: %s s, executor peak RSS %s MiB", label, bu.Secs(d), bu.MiB(rss))
			} else {
				br, err := e.viaGateway(ctx, bTag)
				if err != nil {
					return fmt.Errorf("%s (b): %w", label, err)
				}
				r.b, r.gwHWM, r.upload, r.build = br.wall, br.gwHWM, br.upload, br.build
				bu.Log.Printf("%s (b) gateway: %s s (accepted after %s s, build+push %s s), gateway VmHWM %s MiB",
					label, bu.Secs(br.wall), bu.Secs(br.upload), bu.Secs(br.build), bu.MiB(br.gwHWM))
			}
		}
		if !c.skipVerify {
			r.aOK = e.verifyLogged(ctx, aTag)
			r.bOK = e.verifyLogged(ctx, bTag)
		}
		if !warm {
			runs = append(runs, r)
		}
	}
	gwMem, _ := bu.ReadMem(e.gw.Cmd.Process.Pid)
	e.printOverhead(runs, gwMem)
	return nil
}

// regAuth is the embedded registry's account, for pulling images back.
func (e *env) regAuth() remote.Option {
	return remote.WithAuth(&authn.Basic{Username: e.regUser, Password: e.regPassword})
}

func (e *env) verifyLogged(ctx context.Context, ref string) string {
	if err := refproject.Verify(ctx, ref, e.proj, e.regAuth()); err != nil {
		bu.Log.Printf("image %s is INCORRECT: %v", ref, err)
		return "INCORRECT"
	}
	return "ok"
}

func (e *env) printOverhead(runs []abRun, gwMem bu.Mem) {
	c := e.c
	var as, bs []time.Duration
	var rss, hwm []int64
	okA, okB := 0, 0
	fmt.Printf("## bench/overhead: gateway (b) vs. kaniko run directly (a)\n\n")
	fmt.Printf("Reference project: %d files, %.1f MiB (%.0f%% random bytes), multi-stage Dockerfile whose RUN writes %d files. "+
		"%d measured runs after %d warm-up, a/b order alternating. Times are wall seconds. Load average at the end: %s.\n\n",
		len(e.proj.Files), float64(e.proj.Total)/(1<<20), 100*float64(e.proj.RandomBytes)/float64(e.proj.Total), c.genFiles, c.n, c.warmup, bu.LoadAvg())
	fmt.Println("| run | order | (a) direct s | (b) gateway s | (b)−(a) s | (b) accepted after s | (b) build+push s | executor peak RSS MiB | gateway VmHWM MiB | images (a)/(b) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for i, r := range runs {
		as, bs = append(as, r.a), append(bs, r.b)
		rss, hwm = append(rss, r.exeRSS), append(hwm, r.gwHWM)
		if r.aOK == "ok" {
			okA++
		}
		if r.bOK == "ok" {
			okB++
		}
		img := r.aOK + "/" + r.bOK
		if c.skipVerify {
			img = "not checked"
		}
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", i+1, r.order, bu.Secs(r.a), bu.Secs(r.b), bu.Secs(r.b-r.a),
			bu.Secs(r.upload), bu.Secs(r.build), bu.MiB(r.exeRSS), bu.MiB(r.gwHWM), img)
	}
	ma, mb := bu.Median(as), bu.Median(bs)
	limit := time.Duration(1.05*float64(ma)) + 500*time.Millisecond
	verdict := "PASS"
	if mb > limit {
		verdict = "FAIL"
	}
	fmt.Println()
	fmt.Println("| metric | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| median (a) direct | %s s |\n", bu.Secs(ma))
	fmt.Printf("| median (b) gateway | %s s |\n", bu.Secs(mb))
	fmt.Printf("| median(b) − median(a) | %s s |\n", bu.Secs(mb-ma))
	fmt.Printf("| ratio median(b)/median(a) | %.3f |\n", mb.Seconds()/ma.Seconds())
	fmt.Printf("| target median(b) ≤ 1.05·median(a) + 0.5 s | %s ≤ %s: **%s** |\n", bu.Secs(mb), bu.Secs(limit), verdict)
	fmt.Printf("| executor peak RSS (a), median / max | %s / %s MiB |\n", bu.MiB(bu.MedianInt(rss)), bu.MiB(bu.MaxInt(rss)))
	fmt.Printf("| gateway VmHWM during a (b) run, median / max | %s / %s MiB |\n", bu.MiB(bu.MedianInt(hwm)), bu.MiB(bu.MaxInt(hwm)))
	fmt.Printf("| gateway VmHWM since the last reset / VmRSS at the end | %s / %s MiB |\n", bu.MiB(gwMem.HWM), bu.MiB(gwMem.RSS))
	if !c.skipVerify {
		fmt.Printf("| images correct (a) / (b) | %d/%d, %d/%d |\n", okA, len(runs), okB, len(runs))
	}
	fmt.Println()
	fmt.Println("The gateway's VmHWM includes dev mode's embedded registry, which holds blob uploads in memory while they arrive (both (a) and (b) push to it).")
}

// ---------------------------------------------------------------------
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

// ---------------------------------------------------------------------
// (b): buildctl-lite against the dev gateway

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

// ---------------------------------------------------------------------
// -phases: where (b)'s time goes

var phases = []struct{ key, label string }{
	{"client-gz", "client: tar+gzip the context (buildcontext, BestSpeed, as buildctl-lite)"},
	{"client-tar", "client: tar only, no gzip (for comparison; not in the total)"},
	{"extract", "gateway: extract the tar.gz with chown (builder/archive, from a file)"},
	{"executor", "executor, runner's flags (--no-push --oci-layout-path)"},
	{"rm-root", "gateway: remove the job root (runner's deferred RemoveAll)"},
	{"push", "gateway: read the OCI layout and push (builder/push)"},
	{"rm-ws", "gateway: remove the workspace before reporting the result"},
}

// phaseBench runs (b)'s steps one after another, in this process, with the
// product's own packages (the executor invocation is replicated from the
// runner), so each can be timed; and (a) for reference.
func (e *env) phaseBench(ctx context.Context) error {
	c := e.c
	pusher, err := push.New(map[string]push.Registry{e.reg: {Insecure: true, Username: e.regUser, Password: e.regPassword}})
	if err != nil {
		return err
	}
	var xopts []archive.Option
	if e.cred != nil {
		xopts = append(xopts, archive.WithOwner(int(e.cred.Uid), int(e.cred.Gid)))
	}
	samples := map[string][]time.Duration{}
	var gzSize, tarSize int64
	tgz := filepath.Join(e.tmp, "context.tar.gz")
	for i := 0; i < c.warmup+c.n; i++ {
		warm := i < c.warmup
		s := map[string]time.Duration{}
		timeIt := func(key string, f func() error) error {
			start := time.Now()
			err := f()
			s[key] = time.Since(start)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			return nil
		}
		syscall.Sync()
		aTag := fmt.Sprintf("%s/bench/phases-direct:%d", e.reg, i)
		d, _, err := e.direct(ctx, aTag, nil)
		if err != nil {
			return fmt.Errorf("(a): %w", err)
		}
		s["a"], s["a-copy"] = d, e.lastCopy

		err = timeIt("client-gz", func() error {
			f, err := os.Create(tgz)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := buildcontext.Write(ctx, f, e.proj.Dir); err != nil {
				return err
			}
			fi, err := f.Stat()
			gzSize = fi.Size()
			return err
		})
		if err != nil {
			return err
		}
		err = timeIt("client-tar", func() error {
			cw := &countWriter{}
			_, err := buildcontext.Write(ctx, cw, e.proj.Dir, buildcontext.WithCompression(0))
			tarSize = cw.n
			return err
		})
		if err != nil {
			return err
		}

		syscall.Sync()
		w, err := e.newWorkspace()
		if err != nil {
			return err
		}
		bTag := fmt.Sprintf("%s/bench/phases-gw:%d", e.reg, i)
		steps := []struct {
			key string
			f   func() error
		}{
			{"extract", func() error {
				f, err := os.Open(tgz)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = archive.Extract(ctx, f, w.ctxDir, archive.Limits{}, xopts...)
				return err
			}},
			{"executor", func() error {
				_, _, err := e.executor(ctx, w, []string{"--no-push", "--oci-layout-path=" + sandbox.Output})
				return err
			}},
			{"rm-root", func() error { return os.RemoveAll(w.root) }},
			{"push", func() error {
				img, err := ocilayout.Image(ctx, w.out)
				if err != nil {
					return err
				}
				t, err := name.NewTag(bTag, name.StrictValidation)
				if err != nil {
					return err
				}
				return pusher.Push(ctx, img, t, nil)
			}},
			{"rm-ws", func() error { return e.spaces.Remove(ctx, w.ws, nil) }},
		}
		for _, st := range steps {
			if err := timeIt(st.key, st.f); err != nil {
				e.spaces.Remove(ctx, w.ws, nil)
				return err
			}
		}
		line := []string{}
		for _, p := range phases {
			line = append(line, p.key+"="+bu.Secs(s[p.key]))
		}
		bu.Log.Printf("run %d (warm-up %v): (a)=%s %s", i+1, warm, bu.Secs(s["a"]), strings.Join(line, " "))
		if !c.skipVerify {
			e.verifyLogged(ctx, bTag)
		}
		if !warm {
			for k, v := range s {
				samples[k] = append(samples[k], v)
			}
		}
	}

	fmt.Printf("## bench/overhead -phases: (b)'s steps timed one by one\n\n")
	fmt.Printf("Same reference project (%d files, %.1f MiB; tar %.1f MiB, tar.gz %.1f MiB). %d runs after %d warm-up, medians. "+
		"In a real (b) the upload and the extraction overlap, and buildctl-lite adds process start-up and log following. Load average at the end: %s.\n\n",
		len(e.proj.Files), float64(e.proj.Total)/(1<<20), float64(tarSize)/(1<<20), float64(gzSize)/(1<<20), c.n, c.warmup, bu.LoadAvg())
	fmt.Println("| step | median s | min–max s |")
	fmt.Println("|---|---|---|")
	var gwTotal time.Duration
	for _, p := range phases {
		xs := samples[p.key]
		fmt.Printf("| %s | %s | %s–%s |\n", p.label, bu.Secs(bu.Median(xs)), bu.Secs(minD(xs)), bu.Secs(maxD(xs)))
		if p.key != "client-tar" && p.key != "client-gz" {
			gwTotal += bu.Median(xs)
		}
	}
	fmt.Printf("| sum of the gateway-side medians (extract … remove workspace) | %s | |\n", bu.Secs(gwTotal))
	xs := samples["a"]
	fmt.Printf("| (a) executor pushing by itself | %s | %s–%s |\n", bu.Secs(bu.Median(xs)), bu.Secs(minD(xs)), bu.Secs(maxD(xs)))
	xs = samples["a-copy"]
	fmt.Printf("| (a)'s untimed copy of the context into its workspace (same files created as by extract) | %s | %s–%s |\n", bu.Secs(bu.Median(xs)), bu.Secs(minD(xs)), bu.Secs(maxD(xs)))
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func minD(xs []time.Duration) time.Duration {
	var m time.Duration
	for i, x := range xs {
		if i == 0 || x < m {
			m = x
		}
	}
	return m
}

func maxD(xs []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// ---------------------------------------------------------------------
// -kaniko-flags

type flagResult struct {
	flags    []string
	times    []time.Duration
	rss      []int64
	verified int
	wrong    []string
}

func (e *env) flagBench(ctx context.Context) error {
	c := e.c
	var sets [][]string
	if c.flagSets == "" {
		for _, s := range defaultFlagSets {
			sets = append(sets, strings.Fields(s))
		}
	} else {
		for _, s := range strings.Split(c.flagSets, ";") {
			s = strings.TrimSpace(s)
			if s == "none" {
				s = ""
			}
			sets = append(sets, strings.Fields(s))
		}
	}
	res := make([]*flagResult, len(sets))
	for i, s := range sets {
		res[i] = &flagResult{flags: s}
	}
	for w := 0; w < c.warmup; w++ {
		tag := fmt.Sprintf("%s/bench/warmup:%d", e.reg, w)
		d, _, err := e.direct(ctx, tag, sets[0])
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		bu.Log.Printf("warm-up %d/%d: %s s", w+1, c.warmup, bu.Secs(d))
	}
	// Rounds: every flag set once per round, the order rotating, so drift
	// on a noisy host spreads over all sets.
	for round := 0; round < c.n; round++ {
		for j := range sets {
			i := (j + round) % len(sets)
			if err := ctx.Err(); err != nil {
				return err
			}
			r := res[i]
			tag := fmt.Sprintf("%s/bench/flags-%d:%d", e.reg, i, round)
			syscall.Sync()
			d, rss, err := e.direct(ctx, tag, r.flags)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				bu.Log.Printf("round %d %q: build failed: %v", round+1, flagLabel(r.flags), err)
				r.wrong = append(r.wrong, "build failed: "+firstLine(err.Error()))
				continue
			}
			r.times, r.rss = append(r.times, d), append(r.rss, rss)
			bu.Log.Printf("round %d/%d %q: %s s, executor peak RSS %s MiB", round+1, c.n, flagLabel(r.flags), bu.Secs(d), bu.MiB(rss))
			if !c.skipVerify {
				if err := refproject.Verify(ctx, tag, e.proj, e.regAuth()); err != nil {
					bu.Log.Printf("image %s built with %q is INCORRECT: %v", tag, flagLabel(r.flags), err)
					r.wrong = append(r.wrong, err.Error())
				} else {
					r.verified++
				}
			}
		}
	}

	fmt.Printf("## bench/overhead -kaniko-flags: kaniko flag sets on (a), direct executor runs\n\n")
	fmt.Printf("Reference project: %d files, %.1f MiB (%.0f%% random bytes), RUN writes %d files. %d runs per set, round-robin, after %d warm-up. "+
		"Each image is pulled back and checked: all %d generated files, every copied file's content, nothing extra. Load average at the end: %s.\n\n",
		len(e.proj.Files), float64(e.proj.Total)/(1<<20), 100*float64(e.proj.RandomBytes)/float64(e.proj.Total), c.genFiles, c.n, c.warmup, c.genFiles, bu.LoadAvg())
	fmt.Println("| kaniko flags | runs s | median s | vs. none | executor peak RSS median MiB | image |")
	fmt.Println("|---|---|---|---|---|---|")
	base := bu.Median(res[0].times)
	for _, r := range res {
		var ts []string
		for _, t := range r.times {
			ts = append(ts, bu.Secs(t))
		}
		m := bu.Median(r.times)
		rel := "–"
		if base > 0 && m > 0 {
			rel = fmt.Sprintf("%+.1f%%", 100*(m.Seconds()/base.Seconds()-1))
		}
		verdict := "correct"
		switch {
		case len(r.wrong) > 0:
			verdict = "**INCORRECT**: " + firstLine(r.wrong[0])
		case c.skipVerify:
			verdict = "not checked"
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", flagLabel(r.flags), strings.Join(ts, ", "), bu.Secs(m), rel, bu.MiB(bu.MedianInt(r.rss)), verdict)
	}
	if len(sets) > 0 && len(sets[0]) != 0 {
		fmt.Println("\n(\"vs. none\" is relative to the first set.)")
	}
	return nil
}

func flagLabel(f []string) string {
	if len(f) == 0 {
		return "(none)"
	}
	return strings.Join(f, " ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// ---------------------------------------------------------------------

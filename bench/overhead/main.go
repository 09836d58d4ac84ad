// Command overhead measures what the gateway adds to a build: the same
// reference project built (a) by the kaniko executor run directly in the
// runner's sandbox, pushing by itself, and (b) through buildctl-lite and a
// gateway (bin/buildgw, started by internal/testgateway, with a registry
// in this process). With -kaniko-flags it instead compares kaniko flag
// sets on (a) and checks that each produces a correct image.
//
//	go run ./bench/overhead -n 5
//	go run ./bench/overhead -n 3 -kaniko-flags
//
// See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/workspace"
)

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
	gw      *testgateway.Gateway
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
	// regUser and regPassword are the account (a) gives kaniko.
	regUser, regPassword string
	// gwLogFile is the gateway's log, open while it runs.
	gwLogFile *os.File
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
	defer e.stopGateway()

	if c.flagMode {
		return e.flagBench(ctx)
	}
	if c.phaseMode {
		return e.phaseBench(ctx)
	}
	return e.overheadBench(ctx)
}

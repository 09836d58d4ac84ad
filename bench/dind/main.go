// Command dind measures the per-job Docker daemon runner (runners/dind):
//
//  1. how long a per-job daemon takes from start to answering /_ping, and
//     to tear down (kill, unmount, delete), and what it costs in memory;
//
//  2. the reference project of bench/overhead built (a) with the dind
//     runner, then pushed by the gateway's pusher, against (b) `docker
//     build` + `docker push` on ONE long-lived daemon, what CI jobs that
//     mount the host's socket do today. Same run, alternating order, no
//     build cache (`--no-cache` for (b); (a) always starts empty).
//
//     go run ./bench/dind -n 5 -daemons 10
//
// Needs root and Debian's docker.io and docker-registry (scripts/setup
// --test). See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/basestore"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/push"
	"github.com/buildgw/buildgw/runners/dind"
	"github.com/buildgw/buildgw/workspace"
)

type config struct {
	n, warmup, daemons int
	busybox            string
	registry           string
	work               string
	keep               bool
	files              int
	bytes              int64
	genFiles           int
	seed               uint64
	skipVerify         bool
	tmpfsMiB           int64
	bFresh             bool
	order              string
	baseMiB            int64
	cacheFrom          bool
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 5, "measured (a)/(b) runs")
	flag.IntVar(&c.warmup, "warmup", 1, "uncounted warm-up runs before the measured ones")
	flag.IntVar(&c.daemons, "daemons", 10, "per-job daemons started and torn down for the start/teardown figures")
	flag.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox binary for the base image")
	flag.StringVar(&c.registry, "registry", "docker-registry", "Debian's docker-registry (distribution 2.8)")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR or /tmp)")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs, project) for inspection")
	flag.IntVar(&c.files, "files", 1500, "files in the reference project")
	flag.Int64Var(&c.bytes, "bytes", 30<<20, "total bytes of the reference project")
	flag.IntVar(&c.genFiles, "gen-files", 2000, "files the Dockerfile's RUN writes")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the reference project")
	flag.BoolVar(&c.skipVerify, "skip-verify", false, "do not pull images back to check them")
	flag.Int64Var(&c.tmpfsMiB, "tmpfs", 0, "run (a) with the data root on a tmpfs of this many MiB (dind.WithTmpfs); 0: on disk")
	flag.BoolVar(&c.bFresh, "b-fresh", false, "diagnosis: run each (b) on a daemon of its own, started untimed, instead of the long-lived one")
	flag.Int64Var(&c.baseMiB, "base-mib", 64, "random MiB added to busybox for the base image pull vs load figures")
	flag.BoolVar(&c.cacheFrom, "cache-from", false, "also measure a per-tenant cache kept as the last built image, loaded and used with --cache-from")
	flag.StringVar(&c.order, "order", "", "diagnosis: fixed order of each run instead of alternating a,b / b,a, e.g. \"b\" for (b) only")
	flag.Parse()
	if c.n < 1 || c.warmup < 0 || c.daemons < 1 || c.files < 10 || c.bytes < int64(c.files) || c.baseMiB < 0 {
		fmt.Fprintln(os.Stderr, "dind: -n and -daemons must be >= 1, -warmup and -base-mib >= 0, -files >= 10, -bytes >= -files")
		os.Exit(2)
	}
	bu.Main("dind", func(ctx context.Context) error { return run(ctx, &c) })
}

type env struct {
	c       *config
	tmp     string
	spaces  *workspace.Workspaces // (a)'s workspaces
	logs    string
	r       *dind.Runner // (a)'s runner
	hr      *dind.Runner // starts (b)'s daemon(s): data root always on disk
	proj    *refproject.Project
	regBin  string
	regAddr string
	reg     *bu.Daemon
	regN    int
	base    string
	pusher  *push.Pusher
	host    *dind.Daemon // (b)'s long-lived daemon
	store   *basestore.Store
}

func run(ctx context.Context, c *config) (err error) {
	if _, err := bu.ModuleRoot(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: dockerd is rootful")
	}
	e := &env{c: c}
	var opts []dind.Option
	if c.tmpfsMiB > 0 {
		opts = append(opts, dind.WithTmpfs(c.tmpfsMiB<<20))
	}
	e.r, err = dind.New(opts...)
	if err != nil {
		return err
	}
	if e.hr, err = dind.New(); err != nil {
		return err
	}
	if err := e.r.Available(ctx); err != nil {
		return fmt.Errorf("dind runner unavailable: %w (run scripts/setup --test)", err)
	}
	if e.regBin, err = exec.LookPath(c.registry); err != nil {
		return fmt.Errorf("%s not found: run scripts/setup --test (it installs docker-registry)", c.registry)
	}
	e.tmp, err = os.MkdirTemp(c.work, "buildgw-bench-dind-")
	if err != nil {
		return err
	}
	defer func() {
		if e.host != nil {
			if serr := e.host.Stop(); serr != nil {
				bu.Log.Printf("stopping the long-lived daemon: %v", serr)
			}
		}
		if e.reg != nil {
			e.reg.Stop(10 * time.Second)
		}
		if c.keep {
			bu.Log.Printf("kept %s", e.tmp)
			return
		}
		if rerr := os.RemoveAll(e.tmp); rerr != nil {
			bu.Log.Printf("removing %s: %v", e.tmp, rerr)
		}
	}()
	e.logs = filepath.Join(e.tmp, "logs")
	for _, d := range []string{e.logs, filepath.Join(e.tmp, "daemons")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	// (a)'s workspaces on disk, as the gateway makes them.
	if e.spaces, err = workspace.New(workspace.NewLayout(e.tmp)); err != nil {
		return err
	}
	bu.Log.Printf("dockerd %s, docker %s", e.r.Dockerd(), e.r.Docker())

	dm, err := e.daemonBench(ctx)
	if err != nil {
		return err
	}

	bu.Log.Printf("generating the reference project (%d files, %s MiB) in %s", c.files, bu.MiB(c.bytes), e.tmp)
	e.proj, err = refproject.Generate(filepath.Join(e.tmp, "project"), c.files, c.bytes, c.seed, c.genFiles)
	if err != nil {
		return fmt.Errorf("generating project: %w", err)
	}
	e.regAddr, err = testenv.LoopbackAddr()
	if err != nil {
		return err
	}
	e.base = e.regAddr + "/library/busybox:latest"
	if e.pusher, err = push.New(map[string]push.Registry{e.regAddr: {Insecure: true}}); err != nil {
		return err
	}
	// (b)'s daemon: same binaries and flags as a job's, started once.
	e.host, err = e.hr.StartDaemon(ctx, filepath.Join(e.tmp, "hostd"), dind.DaemonConfig{InsecureRegistries: []string{e.regAddr}, Tag: "bench-host", Network: dind.NetworkHost})
	if err != nil {
		return fmt.Errorf("starting the long-lived daemon: %w", err)
	}
	bu.Log.Printf("long-lived daemon: socket %s, storage driver %s", e.host.Socket(), e.host.StorageDriver())
	bf, err := e.baseBench(ctx)
	if err != nil {
		return fmt.Errorf("base images: %w", err)
	}
	// (a)'s base images, as the gateway has them: one store for all
	// builds, so each build after the first fetches nothing.
	if e.store, err = basestore.New(filepath.Join(e.tmp, "store")); err != nil {
		return err
	}
	return e.abBench(ctx, dm, bf)
}

// ---------------------------------------------------------------------
// Per-job daemon start and teardown

type daemonFigures struct {
	start, stop []time.Duration
	rss         []int64
	driver      string
}

func (e *env) daemonBench(ctx context.Context) (*daemonFigures, error) {
	f := &daemonFigures{}
	for i := 0; i < e.c.daemons; i++ {
		dir := filepath.Join(e.tmp, "daemons", strconv.Itoa(i))
		syscall.Sync()
		t0 := time.Now()
		d, err := e.r.StartDaemon(ctx, dir, dind.DaemonConfig{Tag: "bench-" + strconv.Itoa(i)})
		if err != nil {
			return nil, fmt.Errorf("daemon %d: %w", i, err)
		}
		start := time.Since(t0)
		f.driver = d.StorageDriver()
		// Idle footprint once it answers: init, dockerd and containerd.
		time.Sleep(200 * time.Millisecond)
		rss := bu.RSSUnder(dir)
		t0 = time.Now()
		if err := d.Stop(); err != nil {
			return nil, fmt.Errorf("daemon %d: stopping: %w", i, err)
		}
		stop := time.Since(t0)
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			return nil, fmt.Errorf("daemon %d: %s left after Stop", i, dir)
		}
		f.start, f.stop, f.rss = append(f.start, start), append(f.stop, stop), append(f.rss, rss)
		bu.Log.Printf("daemon %d/%d: ready in %s s, torn down in %s s, idle RSS %s MiB", i+1, e.c.daemons, bu.Secs(start), bu.Secs(stop), bu.MiB(rss))
	}
	return f, nil
}

// peakRSSTmpfs samples RSSUnder(dir) and, for a job daemon whose data
// root is a tmpfs, how much of it is used, until stop is called.
func peakRSSTmpfs(dir string) (stop func() (rss, tmpfs int64)) {
	s := bu.PeakSampler(100*time.Millisecond, func() int64 { return bu.RSSUnder(dir) }, func() int64 { return tmpfsUsed(dir) })
	return func() (int64, int64) { p := s(); return p[0], p[1] }
}

// tmpfsUsed returns how much of a job daemon's data root (dir/data) is in
// use if it is a tmpfs. That tmpfs exists only in the daemon's mount
// namespace, reached through its init's /proc/PID/root.
func tmpfsUsed(dir string) int64 {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return 0
	}
	var st struct{ Pid int }
	if json.Unmarshal(b, &st) != nil || st.Pid <= 0 {
		return 0
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(fmt.Sprintf("/proc/%d/root%s", st.Pid, filepath.Join(dir, "data")), &fs) != nil || fs.Type != 0x01021994 {
		return 0
	}
	return int64(fs.Blocks-fs.Bfree) * fs.Bsize
}

// ---------------------------------------------------------------------
// (a) dind runner + gateway push vs (b) docker build + push, one daemon

type abRun struct {
	order                        string
	a, b                         time.Duration
	prepare, ready, load         time.Duration
	export, teardown, aPush      time.Duration
	aRemove                      time.Duration // workspace removal, after the timed part
	bBuild, bPush                time.Duration
	aDaemonRSS, aSelfHWM, aTmpfs int64
	bDaemonRSS                   int64
	aOK, bOK                     string
}

func (e *env) abBench(ctx context.Context, dm *daemonFigures, bf *baseFigures) error {
	c := e.c
	var runs []abRun
	for i := 0; i < c.warmup+c.n; i++ {
		warm := i < c.warmup
		label := fmt.Sprintf("run %d/%d", i-c.warmup+1, c.n)
		if warm {
			label = fmt.Sprintf("warm-up %d/%d", i+1, c.warmup)
		}
		r := abRun{order: "a,b"}
		if i%2 == 1 {
			r.order = "b,a"
		}
		if c.order != "" {
			r.order = c.order
		}
		for _, which := range strings.Split(r.order, ",") {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Each side pushes to an empty registry, so neither finds
			// the other's (or an earlier run's) blobs there.
			if err := e.freshRegistry(ctx); err != nil {
				return err
			}
			syscall.Sync()
			if which == "a" {
				ref := fmt.Sprintf("%s/bench/dind:%d", e.regAddr, i)
				if err := e.runA(ctx, i, ref, &r); err != nil {
					return fmt.Errorf("%s (a): %w", label, err)
				}
				bu.Log.Printf("%s (a) dind: %s s (bases prepared %s, daemon ready %s, bases loaded %s, export %s, stop %s, push %s; then workspace removal %s), job daemon peak RSS %s MiB, bench VmHWM %s MiB",
					label, bu.Secs(r.a), bu.Secs(r.prepare), bu.Secs(r.ready), bu.Secs(r.load), bu.Secs(r.export), bu.Secs(r.teardown), bu.Secs(r.aPush), bu.Secs(r.aRemove), bu.MiB(r.aDaemonRSS), bu.MiB(r.aSelfHWM))
				if !c.skipVerify {
					r.aOK = verifyLogged(ctx, ref, e.proj)
				}
			} else {
				ref := fmt.Sprintf("%s/bench/host:%d", e.regAddr, i)
				if err := e.runB(ctx, i, ref, &r); err != nil {
					return fmt.Errorf("%s (b): %w", label, err)
				}
				bu.Log.Printf("%s (b) one daemon: %s s (build %s, push %s), daemon peak RSS %s MiB",
					label, bu.Secs(r.b), bu.Secs(r.bBuild), bu.Secs(r.bPush), bu.MiB(r.bDaemonRSS))
				if !c.skipVerify {
					r.bOK = verifyLogged(ctx, ref, e.proj)
				}
				// Untimed: keep the long-lived daemon's store from
				// growing run after run (the base image stays cached).
				if !c.bFresh {
					e.docker(ctx, io.Discard, "image", "rm", ref)
				}
			}
		}
		if !warm {
			runs = append(runs, r)
		}
	}
	var cf *cacheFigures
	if c.cacheFrom {
		var err error
		if cf, err = e.cacheBench(ctx); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
	}
	e.print(runs, dm)
	bf.print(c.n)
	cf.print()
	return nil
}

var phaseRE = map[string]*regexp.Regexp{
	"ready":    regexp.MustCompile(`dind: job daemon ready in ([0-9.]+)s`),
	"load":     regexp.MustCompile(`dind: \d+ base images loaded in ([0-9.]+)s`),
	"export":   regexp.MustCompile(`dind: image exported in ([0-9.]+)s`),
	"teardown": regexp.MustCompile(`dind: job daemon stopped in ([0-9.]+)s`),
}

func phase(log, which string) time.Duration {
	m := phaseRE[which].FindStringSubmatch(log)
	if m == nil {
		return 0
	}
	s, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(s * float64(time.Second))
}

// runA builds with the dind runner as the gateway's Manager calls it,
// then pushes the result with the gateway's pusher; the job is done. Then,
// untimed, it removes the workspace as the Manager's reaper does.
func (e *env) runA(ctx context.Context, i int, ref string, r *abRun) error {
	ws, err := e.spaces.Create(fmt.Sprintf("a-%d", i), archive.Limits{})
	if err != nil {
		return err
	}
	out := filepath.Join(ws, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(e.logs, fmt.Sprintf("a-%d.log", i))
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	args := map[string]string{"BASE": e.base}
	analysis, err := dockerfile.Load(e.proj.Dir, "Dockerfile", args, "")
	if err != nil {
		return err
	}
	req := &builder.Request{
		ID:                 fmt.Sprintf("bench-a-%d", i),
		Workspace:          ws,
		ContextDir:         e.proj.Dir,
		Dockerfile:         "Dockerfile",
		Analysis:           analysis,
		BuildArgs:          args,
		OutputDir:          out,
		InsecureRegistries: []string{e.regAddr},
	}
	dst, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	bu.ResetHWM(os.Getpid())
	sample := peakRSSTmpfs(filepath.Join(ws, "dind"))
	t0 := time.Now()
	// As the gateway does before each build: the base images, from its
	// store (one HEAD once the store has them).
	bases, err := e.store.Prepare(ctx, req, lf)
	if err != nil {
		sample()
		return err
	}
	req.BaseImages = bases
	r.prepare = time.Since(t0)
	img, err := e.r.Build(ctx, req, &bu.StampWriter{W: lf, T0: t0})
	r.aDaemonRSS, r.aTmpfs = sample()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, bu.Tail(logPath, 20))
	}
	t1 := time.Now()
	if err := e.pusher.Push(ctx, img, dst, nil); err != nil {
		return err
	}
	r.a = time.Since(t0)
	r.aPush = time.Since(t1)
	if m, err := bu.ReadMem(os.Getpid()); err == nil {
		r.aSelfHWM = m.HWM
	}
	b, _ := os.ReadFile(logPath)
	r.ready, r.load, r.export, r.teardown = phase(string(b), "ready"), phase(string(b), "load"), phase(string(b), "export"), phase(string(b), "teardown")
	// Untimed, as the Manager's reaper does it after the build is
	// reported: the daemon's files, through the runner's RemoveAll.
	t2 := time.Now()
	if err := e.r.RemoveAll(ctx, ws); err != nil {
		return err
	}
	r.aRemove = time.Since(t2)
	return nil
}

// runB is what a CI job with the host's socket does: docker build, then
// docker push, against the one long-lived daemon.
func (e *env) runB(ctx context.Context, i int, ref string, r *abRun) error {
	logPath := filepath.Join(e.logs, fmt.Sprintf("b-%d.log", i))
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	if e.c.bFresh {
		old := e.host
		h, err := e.hr.StartDaemon(ctx, filepath.Join(e.tmp, fmt.Sprintf("hostd-%d", i)), dind.DaemonConfig{InsecureRegistries: []string{e.regAddr}, Tag: "bench-host", Network: dind.NetworkHost})
		if err != nil {
			return err
		}
		e.host = h
		defer func() { e.host.Stop(); e.host = old }()
	}
	sample := peakRSSTmpfs(e.host.Dir())
	t0 := time.Now()
	sw := &bu.StampWriter{W: lf, T0: t0}
	if err := e.docker(ctx, sw, "build", "--no-cache", "--network=host", "--rm", "--force-rm",
		"--build-arg=BASE="+e.base, "--tag="+ref, e.proj.Dir); err != nil {
		sample()
		return fmt.Errorf("docker build: %w\n%s", err, bu.Tail(logPath, 20))
	}
	t1 := time.Now()
	if err := e.docker(ctx, sw, "push", ref); err != nil {
		sample()
		return fmt.Errorf("docker push: %w\n%s", err, bu.Tail(logPath, 20))
	}
	r.b = time.Since(t0)
	r.bBuild, r.bPush = t1.Sub(t0), time.Since(t1)
	r.bDaemonRSS, _ = sample()
	return nil
}

func (e *env) docker(ctx context.Context, out io.Writer, args ...string) error {
	return e.dockerAt(ctx, e.host, out, args...)
}

// dockerAt runs the docker CLI against d.
func (e *env) dockerAt(ctx context.Context, d *dind.Daemon, out io.Writer, args ...string) error {
	h, err := bu.NewHostDocker(e.r.Docker(), d.Socket(), filepath.Join(e.tmp, "hostd-cli"))
	if err != nil {
		return err
	}
	return h.Run(ctx, out, args...)
}

// freshRegistry (re)starts docker-registry on e.regAddr with empty
// storage, and pushes the base image to it.
func (e *env) freshRegistry(ctx context.Context) error {
	if e.reg != nil {
		e.reg.Stop(10 * time.Second)
	}
	e.regN++
	dir := filepath.Join(e.tmp, fmt.Sprintf("registry-%d", e.regN))
	if err := os.RemoveAll(filepath.Join(e.tmp, fmt.Sprintf("registry-%d", e.regN-1))); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), e.regAddr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	lf, err := os.Create(filepath.Join(e.logs, "registry.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(e.regBin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = lf, lf
	e.reg, err = bu.StartDaemon(cmd)
	lf.Close()
	if err != nil {
		return fmt.Errorf("starting docker-registry: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + e.regAddr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if e.reg.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("docker-registry did not start:\n%s", bu.Tail(lf.Name(), 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	img, err := baseimage.Busybox(e.c.busybox)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(e.base, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(ref, img, remote.WithContext(ctx))
}

func (e *env) print(runs []abRun, dm *daemonFigures) {
	c := e.c
	fmt.Printf("## bench/dind\n\n")
	fmt.Printf("dockerd %s, storage driver %s. Load average at the end: %s.\n\n", dockerdVersion(e.r.Dockerd()), dm.driver, bu.LoadAvg())
	fmt.Printf("### Per-job daemon (%d started and torn down)\n\n", len(dm.start))
	fmt.Println("| metric | median | p90 | max |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| start to ready (/_ping answers) | %s s | %s s | %s s |\n", bu.Secs(bu.Median(dm.start)), bu.Secs(bu.Percentile(dm.start, 90)), bu.Secs(bu.MaxDuration(dm.start)))
	fmt.Printf("| teardown of an idle daemon (kill, unmount, delete state) | %s s | %s s | %s s |\n", bu.Secs(bu.Median(dm.stop)), bu.Secs(bu.Percentile(dm.stop, 90)), bu.Secs(bu.MaxDuration(dm.stop)))
	fmt.Printf("| idle RSS (init + dockerd + containerd) | %s MiB | | %s MiB |\n\n", bu.MiB(bu.MedianInt(dm.rss)), bu.MiB(bu.MaxInt(dm.rss)))

	fmt.Printf("### Reference project: (a) dind runner + gateway push vs (b) docker build + docker push on one long-lived daemon\n\n")
	fmt.Printf("%d files, %.1f MiB (%.0f%% random bytes), multi-stage Dockerfile whose RUN writes %d files (bench/overhead's, seed %d). "+
		"%d measured runs after %d warm-up, order %s, each side pushing to a fresh docker-registry on loopback. Wall seconds.\n\n",
		len(e.proj.Files), float64(e.proj.Total)/(1<<20), 100*float64(e.proj.RandomBytes)/float64(e.proj.Total), c.genFiles, c.seed, c.n, c.warmup, orderLabel(c.order))
	if c.tmpfsMiB > 0 {
		fmt.Printf("(a) runs with its data root on a %d MiB tmpfs (-tmpfs).\n\n", c.tmpfsMiB)
	}
	if c.bFresh {
		fmt.Printf("(b) runs on a daemon of its own each time (-b-fresh), started and stopped untimed: not one long-lived daemon.\n\n")
	}
	fmt.Println("| run | order | (a) dind s | of which: bases prepared / daemon ready / bases loaded / export / stop / push s | (a) then: workspace removal s | (b) one daemon s | of which: build / push s | (a)/(b) | (a) job daemon peak RSS MiB | (a) bench VmHWM MiB | (b) daemon peak RSS MiB | images (a)/(b) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	var as, bs []time.Duration
	var aRSS, aHWM, bRSS, aTmpfs []int64
	okA, okB := 0, 0
	for i, r := range runs {
		as, bs = append(as, r.a), append(bs, r.b)
		aRSS, aHWM, bRSS, aTmpfs = append(aRSS, r.aDaemonRSS), append(aHWM, r.aSelfHWM), append(bRSS, r.bDaemonRSS), append(aTmpfs, r.aTmpfs)
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
		fmt.Printf("| %d | %s | %s | %s / %s / %s / %s / %s / %s | %s | %s | %s / %s | %.2f | %s | %s | %s | %s |\n", i+1, r.order,
			bu.Secs(r.a), bu.Secs(r.prepare), bu.Secs(r.ready), bu.Secs(r.load), bu.Secs(r.export), bu.Secs(r.teardown), bu.Secs(r.aPush), bu.Secs(r.aRemove),
			bu.Secs(r.b), bu.Secs(r.bBuild), bu.Secs(r.bPush), r.a.Seconds()/r.b.Seconds(),
			bu.MiB(r.aDaemonRSS), bu.MiB(r.aSelfHWM), bu.MiB(r.bDaemonRSS), img)
	}
	ma, mb := bu.Median(as), bu.Median(bs)
	ratio := ma.Seconds() / mb.Seconds()
	verdict := "PASS"
	if ratio > 1.15 {
		verdict = "FAIL"
	}
	fmt.Println()
	fmt.Println("| metric | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| median (a) dind | %s s |\n", bu.Secs(ma))
	fmt.Printf("| median (b) one long-lived daemon | %s s |\n", bu.Secs(mb))
	fmt.Printf("| ratio median(a)/median(b), target ≤ 1.15 | %.3f: **%s** |\n", ratio, verdict)
	fmt.Printf("| (a) job daemon peak RSS, median / max | %s / %s MiB |\n", bu.MiB(bu.MedianInt(aRSS)), bu.MiB(bu.MaxInt(aRSS)))
	fmt.Printf("| (a) bench process VmHWM (Build's Go side + push), median / max | %s / %s MiB |\n", bu.MiB(bu.MedianInt(aHWM)), bu.MiB(bu.MaxInt(aHWM)))
	if c.tmpfsMiB > 0 {
		fmt.Printf("| (a) data root tmpfs peak use (memory), median / max | %s / %s MiB |\n", bu.MiB(bu.MedianInt(aTmpfs)), bu.MiB(bu.MaxInt(aTmpfs)))
	}
	fmt.Printf("| (b) long-lived daemon peak RSS during a run, median / max | %s / %s MiB |\n", bu.MiB(bu.MedianInt(bRSS)), bu.MiB(bu.MaxInt(bRSS)))
	if !c.skipVerify {
		fmt.Printf("| images correct (a) / (b) | %d/%d, %d/%d |\n", okA, len(runs), okB, len(runs))
	}
}

func orderLabel(o string) string {
	if o == "" {
		return "alternating a,b / b,a"
	}
	return "always " + o
}

func dockerdVersion(dockerd string) string {
	out, err := exec.Command(dockerd, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "Docker version "))
}

// ---------------------------------------------------------------------

func verifyLogged(ctx context.Context, ref string, p *refproject.Project) string {
	if err := refproject.Verify(ctx, ref, p); err != nil {
		bu.Log.Printf("image %s is WRONG: %v", ref, err)
		return "WRONG"
	}
	return "ok"
}

// Command anchors measures buildgw against what it replaces and what it
// could be replaced with, side by side in one interleaved run: the
// gateway with its kaniko runner and with its dind runner (through
// buildctl-lite, as a CI job submits), `docker build` plus `docker push`
// on one long-lived dockerd (a CI job with the host's socket), and
// BuildKit (buildkitd with its OCI worker, `buildctl build --output
// type=image,push=true`). Cases: cold, warm with the context unchanged,
// one source file changed on a dependency-first Dockerfile (against that
// Dockerfile's own cold build), and ten concurrent cold builds of
// different projects. Every image is pulled back and checked file by file.
//
//	go run ./bench/anchors -n 5
//
// Run as root from the repository root after scripts/setup --test (bin/
// and BuildKit's binaries in .tools/bin). Everything runs on loopback in
// a temporary directory. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/baseimage"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testbuildkit"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/runners/dind"
)

type config struct {
	n, files, genFiles int
	deps               int
	conc, concFiles    int
	bytes, concBytes   int64
	seed               uint64
	gwConcurrency      int
	bin, busybox, work string
	builders, cases    string
	keep, verbose      bool
	bksCache           string
}

// Builders and cases, in the order the tables list them.
var (
	allBuilders = []string{"kaniko", "dind", "docker", "buildkit", "bk-sandbox"}
	allCases    = []string{"cold", "warm", "deps-cold", "one-file", "concurrent"}
	titles      = map[string]string{
		"kaniko":     "buildgw, kaniko runner",
		"dind":       "buildgw, dind runner",
		"docker":     "`docker build` + `docker push`, long-lived dockerd",
		"buildkit":   "BuildKit, buildkitd + buildctl",
		"bk-sandbox": "BuildKit rootless in buildgw's sandbox, per build (prototype)",
	}
)

func main() {
	var c config
	flag.IntVar(&c.n, "n", 5, "interleaved rounds")
	flag.IntVar(&c.files, "files", 1500, "files in the reference projects")
	flag.Int64Var(&c.bytes, "bytes", 30<<20, "bytes in the reference projects")
	flag.IntVar(&c.genFiles, "gen-files", 2000, "files the first reference's RUN writes, and the dependency-first reference's install")
	flag.IntVar(&c.deps, "deps", 20, "dependencies in the dependency-first reference's deps.lock")
	flag.IntVar(&c.conc, "concurrent", 10, "concurrent cold builds of different projects")
	flag.IntVar(&c.concFiles, "concurrent-files", 300, "files in each concurrent build's project")
	flag.Int64Var(&c.concBytes, "concurrent-bytes", 6<<20, "bytes in each concurrent build's project")
	flag.Uint64Var(&c.seed, "seed", 1, "project generator seed")
	flag.IntVar(&c.gwConcurrency, "gw-concurrency", 0, "the gateway's concurrency (0: its default, the number of CPUs)")
	flag.StringVar(&c.bin, "bin", "bin", "directory of buildgw, buildctl-lite and kaniko-executor")
	flag.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox for the base image")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR)")
	flag.StringVar(&c.builders, "builders", strings.Join(allBuilders, ","), "builders to measure")
	flag.StringVar(&c.cases, "cases", strings.Join(allCases, ","), "cases to measure")
	flag.StringVar(&c.bksCache, "bks-cache", "tenant-root", "bk-sandbox's cache: tenant-root (the tenant's daemon state, when free) or local (state per build, cache imported from and merged into a tenant directory)")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs, projects)")
	flag.BoolVar(&c.verbose, "v", false, "gateway log to stderr")
	flag.Parse()
	if c.n < 1 || c.conc < 1 || c.deps < 1 || c.genFiles < c.deps || c.files < 10 || c.concFiles < 10 {
		fmt.Fprintln(os.Stderr, "anchors: -n, -concurrent and -deps must be >= 1, -gen-files >= -deps, -files and -concurrent-files >= 10")
		os.Exit(2)
	}
	for _, l := range [][2][]string{{strings.Split(c.builders, ","), allBuilders}, {strings.Split(c.cases, ","), allCases}} {
		for _, x := range l[0] {
			if !slices.Contains(l[1], x) {
				fmt.Fprintf(os.Stderr, "anchors: unknown %q (known: %s)\n", x, strings.Join(l[1], ","))
				os.Exit(2)
			}
		}
	}
	bu.Main("anchors", func(ctx context.Context) error { return run(ctx, &c) })
}

// sample is one measured build (or, for concurrent, one batch).
type sample struct {
	d time.Duration
	// Peak RSS of the daemon side: the gateway process, dockerd with
	// containerd and shims, buildkitd with runc; and of the gateway with
	// its sandboxes and job daemons (0 for the others).
	server, tree int64
}

type env struct {
	c          *config
	tmp, root  string
	host, base string
	builders   []string
	cases      []string
	p1         *refproject.Project
	p2         *refproject.DepsProject
	conc       []*refproject.Project
	gw         *testgateway.Gateway
	gwLog      *os.File
	ctl        string
	dr         *dind.Runner
	dd         *dind.Daemon
	hd         *bu.HostDocker
	bk         *testbuildkit.Daemon
	bks        *sandboxed
	edits      int
	mu         sync.Mutex
	rejected   map[string]int                 // submissions refused as "runner not available", retried
	res        map[string]map[string][]sample // [builder][case]
}

func run(ctx context.Context, c *config) (err error) {
	e := &env{c: c, builders: strings.Split(c.builders, ","), cases: strings.Split(c.cases, ","), res: map[string]map[string][]sample{}, rejected: map[string]int{}}
	if e.root, err = bu.ModuleRoot(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root, like a production gateway (dockerd and buildkitd are rootful too)")
	}
	if e.tmp, err = os.MkdirTemp(c.work, "buildgw-bench-anchors-"); err != nil {
		return err
	}
	os.Chmod(e.tmp, 0o711)
	var stops []func()
	defer func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
		if c.keep {
			bu.Log.Printf("kept %s", e.tmp)
			return
		}
		if err := os.RemoveAll(e.tmp); err != nil {
			bu.Log.Printf("removing %s: %v", e.tmp, err)
		}
	}()
	for _, d := range []string{"logs", "blobs"} {
		if err := os.Mkdir(filepath.Join(e.tmp, d), 0o700); err != nil {
			return err
		}
	}
	for _, b := range e.builders {
		e.res[b] = map[string][]sample{}
	}

	// One registry for every builder: the base image, and every push.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(registry.NewDiskBlobHandler(filepath.Join(e.tmp, "blobs")))))
	stops = append(stops, srv.Close)
	e.host = srv.Listener.Addr().String()
	img, err := baseimage.Busybox(c.busybox)
	if err != nil {
		return err
	}
	e.base = e.host + "/library/busybox:latest"
	ref, _ := name.ParseReference(e.base)
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("pushing the base image: %w", err)
	}

	bu.Log.Printf("generating the reference projects (%d files, %s MiB each) and %d for the concurrent builds", c.files, bu.MiB(c.bytes), c.conc)
	if e.p1, err = refproject.Generate(filepath.Join(e.tmp, "project"), c.files, c.bytes, c.seed, c.genFiles); err != nil {
		return err
	}
	if e.p2, err = refproject.GenerateDeps(filepath.Join(e.tmp, "project-deps"), c.files, c.bytes, c.seed+1, c.deps, c.genFiles/c.deps); err != nil {
		return err
	}
	if slices.Contains(e.cases, "concurrent") {
		for i := range c.conc {
			p, err := refproject.Generate(filepath.Join(e.tmp, fmt.Sprintf("project-%d", i)), c.concFiles, c.concBytes, c.seed+100+uint64(i), c.genFiles/4)
			if err != nil {
				return err
			}
			e.conc = append(e.conc, p)
		}
	}

	if slices.Contains(e.builders, "kaniko") || slices.Contains(e.builders, "dind") {
		if err := e.startGateway(ctx); err != nil {
			return err
		}
		stops = append(stops, func() {
			if err := e.gw.Stop(); err != nil {
				bu.Log.Printf("gateway: %v", err)
			}
			e.gwLog.Close()
		})
	}
	if slices.Contains(e.builders, "docker") {
		if e.dr, err = dind.New(); err != nil {
			return err
		}
		if err := e.dr.Available(ctx); err != nil {
			return fmt.Errorf("docker unavailable: %w (run scripts/setup --test)", err)
		}
		if e.dd, err = e.dr.StartDaemon(ctx, filepath.Join(e.tmp, "hostd"), dind.DaemonConfig{InsecureRegistries: []string{e.host}, Tag: "bench-anchors", Network: dind.NetworkHost}); err != nil {
			return fmt.Errorf("starting the long-lived dockerd: %w", err)
		}
		stops = append(stops, func() {
			if err := e.dd.Stop(); err != nil {
				bu.Log.Printf("stopping the long-lived dockerd: %v", err)
			}
		})
		if e.hd, err = bu.NewHostDocker(e.dr.Docker(), e.dd.Socket(), filepath.Join(e.tmp, "hostd-client")); err != nil {
			return err
		}
		bu.Log.Printf("long-lived dockerd: storage driver %s", e.dd.StorageDriver())
	}
	if slices.Contains(e.builders, "buildkit") {
		bkd, bctl, err := testbuildkit.BinsIn(e.root)
		if err != nil {
			return err
		}
		// Short: buildkitd's socket path must stay under 108 bytes.
		dir, err := os.MkdirTemp("", "bk-")
		if err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		d, stop, err := testbuildkit.Launch(lctx, bkd, bctl, dir)
		cancel()
		if err != nil {
			os.RemoveAll(dir)
			return err
		}
		e.bk = d
		stops = append(stops, func() {
			if err := stop(); err != nil {
				bu.Log.Printf("buildkitd: %v", err)
			}
			os.RemoveAll(dir)
		})
		bu.Log.Printf("buildkitd pid %d", d.Pid)
	}

	if slices.Contains(e.builders, "bk-sandbox") {
		if e.bks, err = newSandboxed(ctx, e.root, e.tmp, e.base, e.host, c.bksCache); err != nil {
			return fmt.Errorf("preparing the sandboxed BuildKit: %w", err)
		}
	}

	for i := range c.n {
		// Each builder leads in turn.
		order := append(slices.Clone(e.builders[i%len(e.builders):]), e.builders[:i%len(e.builders)]...)
		for _, b := range order {
			if err := e.sequential(ctx, b, i); err != nil {
				return fmt.Errorf("round %d, %s: %w", i+1, b, err)
			}
		}
		if slices.Contains(e.cases, "concurrent") {
			for _, b := range order {
				if err := e.concurrent(ctx, b, i); err != nil {
					return fmt.Errorf("round %d, %s, concurrent: %w", i+1, b, err)
				}
			}
		}
		if i+1 < c.n {
			// For a run cut short: what the rounds so far measured.
			e.print(os.Stderr, i+1)
		}
	}
	e.print(os.Stdout, c.n)
	return nil
}

// startGateway runs bin/buildgw (internal/testgateway, binary mode) with
// both runners allowed, pushing to the shared registry.
func (e *env) startGateway(ctx context.Context) error {
	lf, err := os.Create(filepath.Join(e.tmp, "logs", "gateway.log"))
	if err != nil {
		return err
	}
	e.gwLog = lf
	var out io.Writer = lf
	if e.c.verbose {
		out = io.MultiWriter(lf, os.Stderr)
	}
	bin, err := filepath.Abs(e.c.bin)
	if err != nil {
		return err
	}
	e.ctl = filepath.Join(bin, "buildctl-lite")
	cfg := gateway.DefaultConfig()
	cfg.StateDir = filepath.Join(e.tmp, "gw", "state")
	if err := os.MkdirAll(filepath.Dir(cfg.StateDir), 0o711); err != nil {
		return err
	}
	cfg.Runners.Kaniko.Executor = filepath.Join(bin, "kaniko-executor")
	cfg.Concurrency = e.c.gwConcurrency
	// Ten concurrent submissions of one identity: none turned away.
	cfg.Queue.MaxUploadingPerIdentity = 0
	cfg.Registries = map[string]gateway.Registry{e.host: {Insecure: true}}
	pol := testgateway.Policy{Rules: []testgateway.Rule{{Name: "bench", Match: map[string]string{"kind": "token"},
		Allow: testgateway.Allow{From: []string{e.host}, Destinations: []string{e.host + "/**"}, Runners: []string{"kaniko", "dind"}}}}}
	e.gw, err = testgateway.Launch(ctx, cfg, testgateway.WithBinary(filepath.Join(bin, "buildgw")), testgateway.WithOutput(out), testgateway.WithPolicy(pol))
	if err != nil {
		return fmt.Errorf("starting the gateway: %w", err)
	}
	bu.Log.Printf("gateway pid %d at %s", e.gw.Cmd.Process.Pid, e.gw.URL)
	return nil
}

// sequential runs builder b's single builds of round i: the first
// reference cold and warm, the dependency-first reference cold and with
// one source file changed.
func (e *env) sequential(ctx context.Context, b string, round int) error {
	for _, k := range []string{"cold", "warm", "deps-cold", "one-file"} {
		if !slices.Contains(e.cases, k) {
			continue
		}
		var dir string
		var verify func(ctx context.Context, ref string) error
		switch k {
		case "cold", "warm":
			dir = e.p1.Dir
			verify = func(ctx context.Context, ref string) error { return refproject.Verify(ctx, ref, e.p1) }
		default:
			dir = e.p2.Dir
			verify = func(ctx context.Context, ref string) error { return refproject.VerifyDeps(ctx, ref, e.p2) }
		}
		// A cold build's context is one no builder has built before: a
		// source file the image holds is new (for the dependency-first
		// reference, deps.lock too), so nothing after the base can come
		// from a cache. One-file changes one source file only.
		e.edits++
		switch k {
		case "cold":
			if _, err := e.p1.ChangeOne(e.edits); err != nil {
				return err
			}
		case "deps-cold":
			if err := e.p2.SetLock(fmt.Sprint(e.edits)); err != nil {
				return err
			}
			fallthrough
		case "one-file":
			if _, err := e.p2.ChangeOne(e.edits); err != nil {
				return err
			}
		}
		cold := k == "cold" || k == "deps-cold"
		ref := fmt.Sprintf("%s/bench/%s:%d-%s", e.host, b, round+1, k)
		syscall.Sync()
		sm, err := e.measure(ctx, b, func(ctx context.Context, lf io.Writer) error {
			return e.build(ctx, b, dir, ref, cold, lf)
		}, fmt.Sprintf("%s-%d-%s", b, round+1, k))
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if err := verify(ctx, ref); err != nil {
			return fmt.Errorf("%s: image %s is INCORRECT: %w", k, ref, err)
		}
		e.res[b][k] = append(e.res[b][k], sm)
		bu.Log.Printf("round %d %-8s %-9s %6.2fs, peak RSS %s MiB (with children %s MiB)", round+1, b, k, sm.d.Seconds(), bu.MiB(sm.server), bu.MiB(sm.tree))
	}
	return nil
}

// concurrent starts builder b's cold builds of the concurrent projects
// at once and measures until the last is pushed.
func (e *env) concurrent(ctx context.Context, b string, round int) error {
	for _, p := range e.conc {
		e.edits++
		if _, err := p.ChangeOne(e.edits); err != nil {
			return err
		}
	}
	refs := make([]string, len(e.conc))
	syscall.Sync()
	sm, err := e.measure(ctx, b, func(ctx context.Context, lf io.Writer) error {
		errs := make([]error, len(e.conc))
		var wg sync.WaitGroup
		for i, p := range e.conc {
			refs[i] = fmt.Sprintf("%s/bench/%s-c%d:%d", e.host, b, i, round+1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf strings.Builder
				errs[i] = e.build(ctx, b, p.Dir, refs[i], true, &buf)
				fmt.Fprintf(lf, "=== build %d\n%s", i, buf.String())
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}, fmt.Sprintf("%s-%d-concurrent", b, round+1))
	if err != nil {
		return err
	}
	for i, p := range e.conc {
		if err := refproject.Verify(ctx, refs[i], p); err != nil {
			return fmt.Errorf("image %s is INCORRECT: %w", refs[i], err)
		}
	}
	e.res[b]["concurrent"] = append(e.res[b]["concurrent"], sm)
	bu.Log.Printf("round %d %-8s %d concurrent %6.2fs, peak RSS %s MiB (with children %s MiB)", round+1, b, len(e.conc), sm.d.Seconds(), bu.MiB(sm.server), bu.MiB(sm.tree))
	return nil
}

// measure times f, sampling the peak RSS of b's daemon side every 100 ms,
// with f's output in logs/name.log stamped with seconds since the start.
func (e *env) measure(ctx context.Context, b string, f func(context.Context, io.Writer) error, name string) (sample, error) {
	logPath := filepath.Join(e.tmp, "logs", name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return sample{}, err
	}
	defer lf.Close()
	var server, tree func() int64
	switch b {
	case "kaniko", "dind":
		pid := e.gw.Cmd.Process.Pid
		server = func() int64 { m, _ := bu.ReadMem(pid); return m.RSS }
		tree = func() int64 { return bu.RSSTree(pid) }
	case "docker":
		server = func() int64 { return bu.RSSTree(e.dd.Pid()) }
	case "buildkit":
		server = func() int64 { return bu.RSSTree(e.bk.Pid) }
	case "bk-sandbox":
		// Every sandbox's processes name a path under its directory.
		server = func() int64 { return bu.RSSUnder(e.bks.dir) }
	}
	if tree == nil {
		tree = func() int64 { return 0 }
	}
	stop := bu.PeakSampler(100*time.Millisecond, server, tree)
	t0 := time.Now()
	err = f(ctx, &bu.StampWriter{W: lf, T0: t0})
	d := time.Since(t0)
	peaks := stop()
	if err != nil {
		return sample{}, fmt.Errorf("%v\n%s", err, bu.Tail(logPath, 20))
	}
	return sample{d: d, server: peaks[0], tree: peaks[1]}, nil
}

// build builds the project in dir with builder b and pushes it as ref.
// cold asks docker and BuildKit for --no-cache; buildgw's cold builds
// find nothing in its caches anyway (their context is new), and
// --no-cache there would also keep nothing for the warm build after.
func (e *env) build(ctx context.Context, b, dir, ref string, cold bool, out io.Writer) error {
	switch b {
	case "kaniko", "dind":
		for attempt := 1; ; attempt++ {
			cmd := exec.CommandContext(ctx, e.ctl, "submit", "-t", ref, "--build-arg", "BASE="+e.base, "--runner", b, dir)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "BUILDGW_URL=" + e.gw.URL, "BUILDGW_TOKEN=" + e.gw.Token}
			var buf strings.Builder
			cmd.Stdout, cmd.Stderr = io.MultiWriter(out, &buf), io.MultiWriter(out, &buf)
			err := cmd.Run()
			if err == nil {
				return nil
			}
			// The gateway checks the runner at every submission (dind:
			// `dockerd --version` within 10 s), which a loaded host can
			// miss. Counted and reported, then retried.
			if attempt < 3 && strings.Contains(buf.String(), "is not available on this gateway") {
				e.mu.Lock()
				e.rejected[b]++
				e.mu.Unlock()
				continue
			}
			return fmt.Errorf("buildctl-lite submit: %w", err)
		}
	case "docker":
		args := []string{"build", "--network=none", "--rm", "--force-rm", "--build-arg=BASE=" + e.base, "--tag=" + ref}
		if cold {
			args = append(args, "--no-cache")
		}
		if err := e.docker(ctx, out, append(args, dir)...); err != nil {
			return fmt.Errorf("docker build: %w", err)
		}
		if err := e.docker(ctx, out, "push", ref); err != nil {
			return fmt.Errorf("docker push: %w", err)
		}
		return nil
	case "bk-sandbox":
		return e.bks.build(ctx, dir, e.base, ref, cold, out)
	default:
		o, err := e.bk.Build(ctx, testbuildkit.Build{Context: dir, Args: map[string]string{"BASE": e.base}, NoCache: cold, Push: ref})
		out.Write(o)
		return err
	}
}

func (e *env) docker(ctx context.Context, out io.Writer, args ...string) error {
	return e.hd.Run(ctx, out, args...)
}

// print writes the tables of the rounds so far to w.
func (e *env) print(w io.Writer, rounds int) {
	fmt.Fprintf(w, "Reference projects: %d files, %s MiB each (RUN / install writes %d files); concurrent: %d projects of %d files, %s MiB. Median of %d rounds. Load average at the end: %s.\n\n",
		e.c.files, bu.MiB(e.c.bytes), e.c.genFiles, len(e.conc), e.c.concFiles, bu.MiB(e.c.concBytes), rounds, bu.LoadAvg())
	med := func(b, k string) time.Duration {
		var ds []time.Duration
		for _, s := range e.res[b][k] {
			ds = append(ds, s.d)
		}
		return bu.Median(ds)
	}
	ratio := func(b, ref, k string) string {
		if _, ok := e.res[ref]; !ok || med(ref, k) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", med(b, k).Seconds()/med(ref, k).Seconds())
	}
	fmt.Fprintln(w, "| builder | case | median (s) | runs (s) | / BuildKit | / docker | daemon-side peak RSS (MiB) | gateway with sandboxes (MiB) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, b := range e.builders {
		for _, k := range e.cases {
			ss := e.res[b][k]
			var runs []string
			var server, tree []int64
			for _, s := range ss {
				runs = append(runs, bu.Secs(s.d))
				server, tree = append(server, s.server), append(tree, s.tree)
			}
			withKids := "–"
			if b == "kaniko" || b == "dind" {
				withKids = bu.MiB(bu.MaxInt(tree))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", titles[b], k, bu.Secs(med(b, k)), strings.Join(runs, ", "),
				ratio(b, "buildkit", k), ratio(b, "docker", k), bu.MiB(bu.MaxInt(server)), withKids)
		}
	}
	if slices.Contains(e.cases, "one-file") && slices.Contains(e.cases, "deps-cold") {
		fmt.Fprintln(w, "\n| builder | warm / cold | one-file / deps-cold |\n|---|---|---|")
		for _, b := range e.builders {
			wc := "–"
			if med(b, "cold") > 0 && med(b, "warm") > 0 {
				wc = fmt.Sprintf("%.2f", med(b, "warm").Seconds()/med(b, "cold").Seconds())
			}
			fmt.Fprintf(w, "| %s | %s | %.2f |\n", titles[b], wc, med(b, "one-file").Seconds()/med(b, "deps-cold").Seconds())
		}
	}
	for _, b := range e.builders {
		if e.rejected[b] > 0 {
			fmt.Fprintf(w, "\n%s: %d submissions refused with \"runner not available\" (the gateway's check at submission timed out) and retried.\n", titles[b], e.rejected[b])
		}
	}
	fmt.Fprintln(w, "\nPeak RSS: the highest of the runs, sampled every 100 ms; daemon side is the gateway process alone, dockerd with containerd and its shims, buildkitd with runc. Every image was pulled back and checked file by file.")
}

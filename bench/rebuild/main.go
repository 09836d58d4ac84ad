// Command rebuild measures rebuilds of the reference project: a cold
// build, a warm rebuild with the context unchanged, and a warm rebuild
// after one source file changed, (g) through the kaniko runner with a
// tenant's layer and result caches, as the gateway runs it, and (d) with
// `docker build` on one long-lived daemon that keeps its own cache (what
// CI jobs that mount the host's docker socket get). Targets for (g): warm
// unchanged ≤ 25 % of cold, one file changed ≤ 50 % of cold. Every image
// is pushed and pulled back and checked file by file.
//
//	go run ./bench/rebuild -n 3
//
// Run as root from the repository root after scripts/setup. Everything
// runs on loopback in a temporary directory.
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
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/basestore"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/runners/dind"
	"github.com/buildgw/buildgw/runners/kaniko"
)

type config struct {
	n, files, genFiles int
	bytes              int64
	seed               uint64
	exe, busybox, work string
	kflags, variants   string
	docker, results    bool
	layers, keep       bool
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 3, "rounds (each: cold, warm, one file changed, for (g) and (d))")
	flag.IntVar(&c.files, "files", 1500, "files in the reference project")
	flag.Int64Var(&c.bytes, "bytes", 30<<20, "bytes in the reference project")
	flag.IntVar(&c.genFiles, "gen-files", 2000, "files the Dockerfile's RUN writes")
	flag.Uint64Var(&c.seed, "seed", 1, "project generator seed")
	flag.StringVar(&c.exe, "executor", "bin/kaniko-executor", "kaniko executor")
	flag.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox for the base image")
	flag.StringVar(&c.work, "work", "", "directory for the temporary directory (default $TMPDIR)")
	flag.StringVar(&c.kflags, "kaniko-flags", "", "extra kaniko flags for (g), space-separated")
	flag.StringVar(&c.variants, "variants", "", "compare (g) variants in the same run: ';'-separated kaniko flag sets, 'none' for no extra flags, the word no-layer-cache for a variant without layer cache (e.g. 'none;--single-snapshot')")
	flag.BoolVar(&c.docker, "docker", true, "measure (d), docker build on a long-lived daemon")
	flag.BoolVar(&c.results, "result-cache", true, "give (g) the result cache")
	flag.BoolVar(&c.layers, "layer-cache", true, "give (g) kaniko's layer cache")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs, project)")
	flag.Parse()
	bu.Main("rebuild", func(ctx context.Context) error { return run(ctx, &c) })
}

// kinds of build, in the order each round runs them.
var kinds = []string{"cold", "warm", "one-file"}

type sample struct {
	total, build, push time.Duration
	rss                int64
	cached             bool
}

type env struct {
	c    *config
	tmp  string
	host string // registry
	base string
	proj *refproject.Project
	r    *kaniko.Runner // the first (g) variant's
	// runners and names of the (g) variants, by system key g, g2, ...
	runners map[string]*kaniko.Runner
	names   map[string]string
	store   *basestore.Store
	dr      *dind.Runner
	d       *dind.Daemon
	hd      *bu.HostDocker
	seq     int
	edits   int
	// res[system][kind]
	res map[string]map[string][]sample
}

func run(ctx context.Context, c *config) error {
	if _, err := bu.ModuleRoot(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root, like a production gateway (dockerd is rootful too)")
	}
	e := &env{c: c, res: map[string]map[string][]sample{"d": {}}, runners: map[string]*kaniko.Runner{},
		names: map[string]string{"d": "(d) docker build, long-lived daemon"}}
	var err error
	if e.tmp, err = os.MkdirTemp(c.work, "buildgw-bench-rebuild-"); err != nil {
		return err
	}
	os.Chmod(e.tmp, 0o711)
	defer func() {
		if e.d != nil {
			if err := e.d.Stop(); err != nil {
				bu.Log.Printf("stopping the long-lived daemon: %v", err)
			}
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

	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(registry.NewDiskBlobHandler(filepath.Join(e.tmp, "blobs"))))
	srv := httptest.NewServer(reg)
	defer srv.Close()
	e.host = srv.Listener.Addr().String()
	img, err := baseimage.Busybox(c.busybox)
	if err != nil {
		return err
	}
	e.base = e.host + "/library/busybox:latest"
	ref, _ := name.ParseReference(e.base)
	if err := remote.Write(ref, img); err != nil {
		return err
	}

	bu.Log.Printf("generating the reference project (%d files, %s MiB)", c.files, bu.MiB(c.bytes))
	if e.proj, err = refproject.Generate(filepath.Join(e.tmp, "project"), c.files, c.bytes, c.seed, c.genFiles); err != nil {
		return err
	}
	variants := []string{c.kflags}
	if c.variants != "" {
		variants = strings.Split(c.variants, ";")
	}
	var systems []string
	for i, v := range variants {
		key := "g"
		if i > 0 {
			key = fmt.Sprintf("g%d", i+1)
		}
		layers := c.layers
		var flags []string
		for _, f := range strings.Fields(v) {
			switch f {
			case "none":
			case "no-layer-cache":
				layers = false
			default:
				flags = append(flags, f)
			}
		}
		kopts := []kaniko.Option{kaniko.WithExecutor(c.exe), kaniko.WithFlags(flags...)}
		desc := "tenant caches"
		if layers {
			kopts = append(kopts, kaniko.WithLayerCache(filepath.Join(e.tmp, key, "layer-cache")))
		} else {
			desc = "no layer cache"
		}
		if c.results {
			kopts = append(kopts, kaniko.WithResultCache(filepath.Join(e.tmp, key, "result-cache"), 0))
			desc += ", result cache"
		}
		if len(flags) > 0 {
			desc += ", " + strings.Join(flags, " ")
		}
		if err := os.Mkdir(filepath.Join(e.tmp, key), 0o711); err != nil {
			return err
		}
		r, err := kaniko.New(kopts...)
		if err != nil {
			return err
		}
		if err := r.Available(ctx); err != nil {
			return err
		}
		if e.r == nil {
			e.r = r
		}
		e.runners[key] = r
		e.names[key] = fmt.Sprintf("(%s) kaniko runner: %s", key, desc)
		e.res[key] = map[string][]sample{}
		systems = append(systems, key)
	}
	if e.store, err = basestore.New(filepath.Join(e.tmp, "basestore")); err != nil {
		return err
	}
	if c.docker {
		if e.dr, err = dind.New(); err != nil {
			return err
		}
		if err := e.dr.Available(ctx); err != nil {
			return fmt.Errorf("docker unavailable: %w (run scripts/setup --test)", err)
		}
		if e.d, err = e.dr.StartDaemon(ctx, filepath.Join(e.tmp, "hostd"), dind.DaemonConfig{InsecureRegistries: []string{e.host}, Tag: "bench-rebuild", Network: dind.NetworkHost}); err != nil {
			return fmt.Errorf("starting the long-lived daemon: %w", err)
		}
		if e.hd, err = bu.NewHostDocker(e.dr.Docker(), e.d.Socket(), filepath.Join(e.tmp, "hostd-client")); err != nil {
			return err
		}
		bu.Log.Printf("long-lived daemon: storage driver %s", e.d.StorageDriver())
	}

	if c.docker {
		systems = append(systems, "d")
	}
	for i := range c.n {
		// Each system leads in turn.
		order := append(slices.Clone(systems[i%len(systems):]), systems[:i%len(systems)]...)
		for _, s := range order {
			for _, k := range kinds {
				if k == "one-file" {
					e.edits++
					if _, err := e.proj.ChangeOne(e.edits); err != nil {
						return err
					}
				}
				exec.Command("sync").Run()
				var sm sample
				var err error
				if s == "d" {
					sm, err = e.dockerBuild(ctx, i, k)
				} else {
					sm, err = e.gateway(ctx, s, i, k)
				}
				if err != nil {
					return fmt.Errorf("round %d, (%s) %s: %w", i+1, s, k, err)
				}
				e.res[s][k] = append(e.res[s][k], sm)
				bu.Log.Printf("round %d (%s) %-8s %6.2fs (build %.2fs, push %.2fs, peak RSS %s MiB, cached %v)",
					i+1, s, k, sm.total.Seconds(), sm.build.Seconds(), sm.push.Seconds(), bu.MiB(sm.rss), sm.cached)
			}
		}
	}
	e.print(systems)
	return nil
}

// gateway builds the project as the gateway does: the context laid out
// in a job workspace (what the upload's extraction does), base images
// from the shared store, the kaniko runner with the round's tenant, the
// push of the result.
func (e *env) gateway(ctx context.Context, sys string, round int, kind string) (sample, error) {
	e.seq++
	r := e.runners[sys]
	logPath := filepath.Join(e.tmp, "logs", fmt.Sprintf("%s-%d-%s.log", sys, round+1, kind))
	lf, err := os.Create(logPath)
	if err != nil {
		return sample{}, err
	}
	defer lf.Close()
	t0 := time.Now()
	req, err := e.workspace(e.seq)
	if err != nil {
		return sample{}, err
	}
	defer r.RemoveAll(ctx, filepath.Dir(req.Workspace))
	// A tenant per round: its caches start empty for the cold build.
	req.Tenant = fmt.Sprintf("bench-%d", round)
	stop := bu.PeakRSS(req.Workspace)
	t1 := time.Now()
	b, err := e.store.Prepare(ctx, req, lf)
	if err != nil {
		stop()
		return sample{}, err
	}
	req.BaseImages = b
	var logBuf strings.Builder
	img, err := r.Build(ctx, req, io.MultiWriter(&bu.StampWriter{W: lf, T0: t0}, &logBuf))
	rss := stop()
	if err != nil {
		return sample{}, fmt.Errorf("%v\n%s", err, bu.Tail(logPath, 20))
	}
	t2 := time.Now()
	ref := fmt.Sprintf("%s/bench/%s:%d-%s", e.host, sys, round+1, kind)
	pr, _ := name.ParseReference(ref)
	if err := remote.Write(pr, img, remote.WithContext(ctx)); err != nil {
		return sample{}, fmt.Errorf("pushing: %w", err)
	}
	sm := sample{total: time.Since(t0), build: t2.Sub(t1), push: time.Since(t2), rss: rss,
		cached: strings.Contains(logBuf.String(), "kaniko not run")}
	if err := refproject.Verify(ctx, ref, e.proj); err != nil {
		return sample{}, fmt.Errorf("image %s is INCORRECT: %w", ref, err)
	}
	return sm, nil
}

// dockerBuild is what a CI job with the host's socket does: docker build
// (cold: --no-cache), then docker push, on the one long-lived daemon.
func (e *env) dockerBuild(ctx context.Context, round int, kind string) (sample, error) {
	logPath := filepath.Join(e.tmp, "logs", fmt.Sprintf("d-%d-%s.log", round+1, kind))
	lf, err := os.Create(logPath)
	if err != nil {
		return sample{}, err
	}
	defer lf.Close()
	ref := fmt.Sprintf("%s/bench/d:%d-%s", e.host, round+1, kind)
	args := []string{"build", "--network=host", "--rm", "--force-rm", "--build-arg=BASE=" + e.base, "--tag=" + ref}
	if kind == "cold" {
		args = append(args, "--no-cache")
	}
	stop := bu.PeakRSS(e.d.Dir())
	t0 := time.Now()
	sw := &bu.StampWriter{W: lf, T0: t0}
	if err := e.docker(ctx, sw, append(args, e.proj.Dir)...); err != nil {
		stop()
		return sample{}, fmt.Errorf("docker build: %w\n%s", err, bu.Tail(logPath, 20))
	}
	t1 := time.Now()
	if err := e.docker(ctx, sw, "push", ref); err != nil {
		stop()
		return sample{}, fmt.Errorf("docker push: %w\n%s", err, bu.Tail(logPath, 20))
	}
	sm := sample{total: time.Since(t0), build: t1.Sub(t0), push: time.Since(t1), rss: stop()}
	lb, _ := os.ReadFile(logPath)
	// Every step a cache hit: docker says so for each COPY and RUN.
	sm.cached = strings.Count(string(lb), "Using cache") == 5
	if err := refproject.Verify(ctx, ref, e.proj); err != nil {
		return sample{}, fmt.Errorf("image %s is INCORRECT: %w", ref, err)
	}
	return sm, nil
}

func (e *env) docker(ctx context.Context, out io.Writer, args ...string) error {
	return e.hd.Run(ctx, out, args...)
}

func (e *env) workspace(i int) (*builder.Request, error) {
	return bu.Workspace(e.r, e.tmp, e.proj.Dir, i, e.base, e.host)
}

func (e *env) print(systems []string) {
	fmt.Printf("Reference project: %d files, %s MiB, RUN writes %d files; median of %d rounds. Load average at the end: %s.\n\n",
		len(e.proj.Files), bu.MiB(e.proj.Total), e.proj.GenFiles, e.c.n, bu.LoadAvg())
	total := func(s, k string) time.Duration {
		return median(e.res[s][k], func(x sample) time.Duration { return x.total })
	}
	fmt.Println("| system | build | total (s) | build (s) | push (s) | total / cold | every step cached | peak RSS (MiB) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, s := range systems {
		cold := total(s, "cold")
		for _, k := range kinds {
			xs := e.res[s][k]
			var rss []int64
			cached := 0
			for _, x := range xs {
				rss = append(rss, x.rss)
				if x.cached {
					cached++
				}
			}
			fmt.Printf("| %s | %s | %s | %s | %s | %.2f | %d/%d | %s |\n", e.names[s], k, bu.Secs(total(s, k)),
				bu.Secs(median(xs, func(x sample) time.Duration { return x.build })),
				bu.Secs(median(xs, func(x sample) time.Duration { return x.push })),
				total(s, k).Seconds()/cold.Seconds(), cached, len(xs), bu.MiB(bu.MedianInt(rss)))
		}
	}
	verdict := func(s, k string, limit float64) string {
		r := total(s, k).Seconds() / total(s, "cold").Seconds()
		if r <= limit {
			return fmt.Sprintf("%.2f ≤ %.2f PASS", r, limit)
		}
		return fmt.Sprintf("%.2f > %.2f FAIL", r, limit)
	}
	fmt.Println("\n| system | warm unchanged ≤ 25 % of cold | one file changed ≤ 50 % of cold |\n|---|---|---|")
	for _, s := range systems {
		if s != "d" {
			fmt.Printf("| %s | %s | %s |\n", s, verdict(s, "warm", 0.25), verdict(s, "one-file", 0.50))
		}
	}
	if e.c.docker {
		fmt.Println("\n| system | cold / (d) cold | warm / (d) warm | one-file / (d) one-file |\n|---|---|---|---|")
		for _, s := range systems {
			if s != "d" {
				fmt.Printf("| %s | %.2f | %.2f | %.2f |\n", s, total(s, "cold").Seconds()/total("d", "cold").Seconds(),
					total(s, "warm").Seconds()/total("d", "warm").Seconds(), total(s, "one-file").Seconds()/total("d", "one-file").Seconds())
			}
		}
	}
	fmt.Println("\nEvery image was pushed, pulled back and checked file by file (refproject.Verify).")
}

func median(xs []sample, f func(sample) time.Duration) time.Duration {
	ds := make([]time.Duration, len(xs))
	for i, x := range xs {
		ds[i] = f(x)
	}
	return bu.Median(ds)
}

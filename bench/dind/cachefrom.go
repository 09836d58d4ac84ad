package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/runners/dind"
)

// cacheFigures measure what a per-tenant build cache could save the dind
// runner in its simplest form: keep a tenant's last built image, load it
// into the next job's fresh daemon and build with --cache-from (the
// legacy builder matches loaded images by config and history).
type cacheFigures struct {
	cold, loadU, buildU, loadC, buildC []time.Duration
}

// cacheBench builds the reference project -n times: cold in a fresh
// daemon (base loaded, as the runner does), then twice in fresh daemons
// with that image loaded and --cache-from: with the context unchanged and
// with one source file added. Daemon start, base load and stop untimed.
func (e *env) cacheBench(ctx context.Context) (*cacheFigures, error) {
	dir := filepath.Join(e.tmp, "cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if err := e.freshRegistry(ctx); err != nil {
		return nil, err
	}
	args := map[string]string{"BASE": e.base}
	analysis, err := dockerfile.Load(e.proj.Dir, "Dockerfile", args, "")
	if err != nil {
		return nil, err
	}
	req := &builder.Request{ID: "cache", Workspace: filepath.Join(dir, "ws"), ContextDir: e.proj.Dir, Dockerfile: "Dockerfile",
		Analysis: analysis, BuildArgs: args, InsecureRegistries: []string{e.regAddr}}
	if err := os.Mkdir(req.Workspace, 0o700); err != nil {
		return nil, err
	}
	bases, err := e.store.Prepare(ctx, req, io.Discard)
	if err != nil {
		return nil, err
	}
	prev := filepath.Join(dir, "prev.tar")
	changed := filepath.Join(e.proj.Dir, "src", "zz-changed.txt")
	f := &cacheFigures{}
	step := 0
	daemon := func() (*dind.Daemon, error) {
		step++
		d, err := e.r.StartDaemon(ctx, filepath.Join(dir, fmt.Sprint(step)), dind.DaemonConfig{Tag: "bench-cache"})
		if err == nil {
			_, err = d.LoadImages(ctx, bases)
		}
		return d, err
	}
	build := func(d *dind.Daemon, extra ...string) (time.Duration, error) {
		t0 := time.Now()
		args := append([]string{"build", "-q", "--network=host", "--pull=false", "--build-arg=BASE=" + e.base, "--tag=bench/cache:1"}, extra...)
		err := e.dockerAt(ctx, d, io.Discard, append(args, e.proj.Dir)...)
		return time.Since(t0), err
	}
	for i := 0; i < e.c.n; i++ {
		d, err := daemon()
		if err != nil {
			return nil, err
		}
		cold, err := build(d)
		if err == nil {
			err = e.dockerAt(ctx, d, io.Discard, "save", "-o", prev, "bench/cache:1")
		}
		d.Stop()
		if err != nil {
			return nil, err
		}
		f.cold = append(f.cold, cold)
		for _, change := range []bool{false, true} {
			if change {
				if err := os.WriteFile(changed, fmt.Appendf(nil, "changed %d\n", i), 0o644); err != nil {
					return nil, err
				}
			}
			d, err := daemon()
			if err != nil {
				return nil, err
			}
			t0 := time.Now()
			err = e.dockerAt(ctx, d, io.Discard, "load", "-q", "-i", prev)
			load := time.Since(t0)
			var b time.Duration
			if err == nil {
				b, err = build(d, "--cache-from=bench/cache:1")
			}
			d.Stop()
			os.Remove(changed)
			if err != nil {
				return nil, err
			}
			if change {
				f.loadC, f.buildC = append(f.loadC, load), append(f.buildC, b)
			} else {
				f.loadU, f.buildU = append(f.loadU, load), append(f.buildU, b)
			}
		}
		bu.Log.Printf("cache %d/%d: cold %s s; unchanged: load %s + build %s s; one file added: load %s + build %s s", i+1, e.c.n,
			bu.Secs(f.cold[i]), bu.Secs(f.loadU[i]), bu.Secs(f.buildU[i]), bu.Secs(f.loadC[i]), bu.Secs(f.buildC[i]))
	}
	return f, nil
}

func (f *cacheFigures) print() {
	if f == nil {
		return
	}
	sum := func(a, b []time.Duration) []time.Duration {
		var s []time.Duration
		for i := range a {
			s = append(s, a[i]+b[i])
		}
		return s
	}
	cold := bu.Median(f.cold)
	u, c := bu.Median(sum(f.loadU, f.buildU)), bu.Median(sum(f.loadC, f.buildC))
	fmt.Printf("\n### Per-tenant cache as --cache-from the tenant's last image (-cache-from)\n\n")
	fmt.Printf("Reference project, %d runs; each build in a fresh daemon with its base loaded (untimed), as the runner builds.\n\n", len(f.cold))
	fmt.Println("| build | median s | of cold |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| cold | %s | 100%% |\n", bu.Secs(cold))
	fmt.Printf("| unchanged context: load last image %s + build %s | %s | %.0f%% |\n", bu.Secs(bu.Median(f.loadU)), bu.Secs(bu.Median(f.buildU)), bu.Secs(u), 100*u.Seconds()/cold.Seconds())
	fmt.Printf("| one source file added: load %s + build %s | %s | %.0f%% |\n", bu.Secs(bu.Median(f.loadC)), bu.Secs(bu.Median(f.buildC)), bu.Secs(c), 100*c.Seconds()/cold.Seconds())
}

package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
)

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
	fmt.Println("Both (a) and (b) push to a registry in the benchmark's own process, so the gateway's VmHWM is the gateway's alone.")
}

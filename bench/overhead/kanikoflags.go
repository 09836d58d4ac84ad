package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
)

// -kaniko-flags: kaniko flag sets compared on (a)

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

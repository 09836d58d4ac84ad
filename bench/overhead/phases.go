package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildgw/buildgw/archive"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/buildcontext"
	"github.com/buildgw/buildgw/ocilayout"
	"github.com/buildgw/buildgw/push"
	"github.com/buildgw/buildgw/sandbox"
)

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
			cw := &bu.CountWriter{}
			_, err := buildcontext.Write(ctx, cw, e.proj.Dir, buildcontext.WithCompression(0))
			tarSize = cw.N()
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
		fmt.Printf("| %s | %s | %s–%s |\n", p.label, bu.Secs(bu.Median(xs)), bu.Secs(bu.MinDuration(xs)), bu.Secs(bu.MaxDuration(xs)))
		if p.key != "client-tar" && p.key != "client-gz" {
			gwTotal += bu.Median(xs)
		}
	}
	fmt.Printf("| sum of the gateway-side medians (extract … remove workspace) | %s | |\n", bu.Secs(gwTotal))
	xs := samples["a"]
	fmt.Printf("| (a) executor pushing by itself | %s | %s–%s |\n", bu.Secs(bu.Median(xs)), bu.Secs(bu.MinDuration(xs)), bu.Secs(bu.MaxDuration(xs)))
	xs = samples["a-copy"]
	fmt.Printf("| (a)'s untimed copy of the context into its workspace (same files created as by extract) | %s | %s–%s |\n", bu.Secs(bu.Median(xs)), bu.Secs(bu.MinDuration(xs)), bu.Secs(bu.MaxDuration(xs)))
	return nil
}

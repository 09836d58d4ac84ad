package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/basestore"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/runners/dind"
)

// baseFigures compare the two ways a base image gets into a fresh job
// daemon: pulled by the daemon from the registry (what the runner did
// before, and what docker build does), or fetched by the gateway into its
// store (warm after the first build: one HEAD) and loaded into the daemon
// (what the runner does now).
type baseFigures struct {
	size                       int64 // compressed bytes of the base
	layers                     int
	pull, prepare, load, total []time.Duration
	coldPrepare                time.Duration
}

// baseBench pushes busybox plus -base-mib of random layers to a fresh
// registry, then, -n times alternating the order, times (1) docker pull
// into a fresh daemon in the host's network, and (2) the gateway's
// Prepare from its (warm) store plus LoadImages into a fresh daemon with
// network none. Daemon start and stop are untimed on both sides.
func (e *env) baseBench(ctx context.Context) (*baseFigures, error) {
	if err := e.freshRegistry(ctx); err != nil {
		return nil, err
	}
	img, err := baseimage.Busybox(e.c.busybox)
	if err != nil {
		return nil, err
	}
	for i := int64(0); i < e.c.baseMiB; i += 16 {
		l, err := random.Layer(min(16, e.c.baseMiB-i)<<20, types.DockerLayer)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	ref := e.regAddr + "/library/bigbase:latest"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("pushing the base: %w", err)
	}
	f := &baseFigures{}
	if f.size, f.layers, err = compressedSize(img); err != nil {
		return nil, err
	}
	store, err := basestore.New(filepath.Join(e.tmp, "base-store"))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.tmp, "bases")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	prepare := func(i int) (*builder.Request, time.Duration, error) {
		ws := filepath.Join(dir, fmt.Sprintf("ws-%d", i))
		ctxDir := filepath.Join(ws, "context")
		if err := os.MkdirAll(ctxDir, 0o700); err != nil {
			return nil, 0, err
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM "+ref+"\n"), 0o644); err != nil {
			return nil, 0, err
		}
		analysis, err := dockerfile.Load(ctxDir, "Dockerfile", nil, "")
		if err != nil {
			return nil, 0, err
		}
		req := &builder.Request{ID: fmt.Sprintf("bases-%d", i), Workspace: ws, ContextDir: ctxDir, Dockerfile: "Dockerfile", Analysis: analysis, InsecureRegistries: []string{e.regAddr}}
		t0 := time.Now()
		b, err := store.Prepare(ctx, req, io.Discard)
		req.BaseImages = b
		return req, time.Since(t0), err
	}
	// The store's first fetch, untimed in the figures below (a gateway
	// pays it once per base image, not per build).
	if _, f.coldPrepare, err = prepare(-1); err != nil {
		return nil, err
	}
	for i := 0; i < e.c.n; i++ {
		order := []string{"pull", "load"}
		if i%2 == 1 {
			order = []string{"load", "pull"}
		}
		for _, which := range order {
			ddir := filepath.Join(dir, fmt.Sprintf("%s-%d", which, i))
			if which == "pull" {
				d, err := e.hr.StartDaemon(ctx, ddir, dind.DaemonConfig{InsecureRegistries: []string{e.regAddr}, Tag: "bench-pull", Network: dind.NetworkHost})
				if err != nil {
					return nil, err
				}
				t0 := time.Now()
				err = e.dockerAt(ctx, d, io.Discard, "pull", "--quiet", ref)
				f.pull = append(f.pull, time.Since(t0))
				if serr := d.Stop(); err == nil {
					err = serr
				}
				if err != nil {
					return nil, fmt.Errorf("pull: %w", err)
				}
				continue
			}
			req, prep, err := prepare(i)
			if err != nil {
				return nil, err
			}
			d, err := e.r.StartDaemon(ctx, ddir, dind.DaemonConfig{Tag: "bench-load", Network: "none", DigestRefs: map[string]string{}})
			if err != nil {
				return nil, err
			}
			t0 := time.Now()
			_, err = d.LoadImages(ctx, req.BaseImages)
			load := time.Since(t0)
			if serr := d.Stop(); err == nil {
				err = serr
			}
			if err != nil {
				return nil, fmt.Errorf("load: %w", err)
			}
			os.RemoveAll(req.Workspace)
			f.prepare, f.load, f.total = append(f.prepare, prep), append(f.load, load), append(f.total, prep+load)
		}
		bu.Log.Printf("base %d/%d: pull %s s, prepare (warm store) %s s + load %s s", i+1, e.c.n, bu.Secs(f.pull[i]), bu.Secs(f.prepare[i]), bu.Secs(f.load[i]))
	}
	return f, nil
}

func compressedSize(img v1.Image) (int64, int, error) {
	ls, err := img.Layers()
	if err != nil {
		return 0, 0, err
	}
	var n int64
	for _, l := range ls {
		s, err := l.Size()
		if err != nil {
			return 0, 0, err
		}
		n += s
	}
	return n, len(ls), nil
}

func (f *baseFigures) print(n int) {
	fmt.Printf("\n### Base image into a fresh job daemon: daemon pull vs gateway store + load\n\n")
	fmt.Printf("busybox plus random layers: %d layers, %s MiB compressed, on a docker-registry on loopback. %d runs, alternating order; daemon start and stop untimed. "+
		"The store's first fetch of the image (once per base image per gateway, not per build): %s s.\n\n", f.layers, bu.MiB(f.size), n, bu.Secs(f.coldPrepare))
	fmt.Println("| way | median s | max s |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| daemon pulls (docker pull, host network) | %s | %s |\n", bu.Secs(bu.Median(f.pull)), bu.Secs(bu.MaxDuration(f.pull)))
	fmt.Printf("| gateway Prepare from its warm store (HEAD, link into the workspace) | %s | %s |\n", bu.Secs(bu.Median(f.prepare)), bu.Secs(bu.MaxDuration(f.prepare)))
	fmt.Printf("| LoadImages into the daemon (network none) | %s | %s |\n", bu.Secs(bu.Median(f.load)), bu.Secs(bu.MaxDuration(f.load)))
	fmt.Printf("| Prepare + load | %s | %s |\n", bu.Secs(bu.Median(f.total)), bu.Secs(bu.MaxDuration(f.total)))
	fmt.Printf("| ratio median(Prepare + load) / median(pull) | %.2f | |\n\n", bu.Median(f.total).Seconds()/bu.Median(f.pull).Seconds())
}

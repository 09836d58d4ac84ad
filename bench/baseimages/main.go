// Command baseimages measures the gateway's shared caches with the real
// kaniko runner: a build of the reference project with a cold base image
// store and layer cache against the same build again (warm: nothing
// fetched, the tenant's cached layers reused; -layer-cache=false for the
// store alone), and the base-image bytes that ten builds of the same base
// download from the registry (target: the image once).
//
//	go run ./bench/baseimages -n 5
//
// Run as root from the repository root after scripts/setup (bin/ holds
// the executor). Everything runs on loopback in a temporary directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/basestore"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/runners/kaniko"
)

func main() {
	n := flag.Int("n", 5, "cold/warm pairs")
	builds := flag.Int("builds", 10, "builds of the same base for the download count")
	exe := flag.String("executor", "bin/kaniko-executor", "kaniko executor")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox for the base image")
	layerCache := flag.Bool("layer-cache", true, "give the builds a tenant's layer cache")
	kflags := flag.String("kaniko-flags", "", "extra kaniko flags, space-separated (e.g. --cache-copy-layers)")
	flag.Parse()
	bu.Main("baseimages", func(ctx context.Context) error {
		return run(ctx, *n, *builds, *exe, *busybox, *layerCache, *kflags)
	})
}

// downloads counts the registry's blob downloads.
type downloads struct{ blobs, bytes atomic.Int64 }

func run(ctx context.Context, n, builds int, exe, busybox string, layerCache bool, kflags string) error {
	tmp, err := os.MkdirTemp("", "buildgw-bench-baseimages-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o711)

	// The registry counts blob downloads and their bytes.
	var c downloads
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			c.blobs.Add(1)
			w = &countingWriter{ResponseWriter: w, n: &c.bytes}
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := srv.Listener.Addr().String()
	img, err := baseimage.Busybox(busybox)
	if err != nil {
		return err
	}
	base := host + "/library/busybox:latest"
	ref, _ := name.ParseReference(base)
	if err := remote.Write(ref, img); err != nil {
		return err
	}
	var baseBytes int64
	ls, _ := img.Layers()
	for _, l := range ls {
		s, _ := l.Size()
		baseBytes += s
	}
	cfg, _ := img.RawConfigFile()
	baseBytes += int64(len(cfg))

	proj, err := refproject.Generate(filepath.Join(tmp, "project"), 300, 16<<20, 1, 200)
	if err != nil {
		return err
	}
	kopts := []kaniko.Option{kaniko.WithExecutor(exe), kaniko.WithFlags(strings.Fields(kflags)...)}
	if layerCache {
		kopts = append(kopts, kaniko.WithLayerCache(filepath.Join(tmp, "layer-cache")))
	}
	r, err := kaniko.New(kopts...)
	if err != nil {
		return err
	}
	if err := r.Available(ctx); err != nil {
		return err
	}
	var seq atomic.Int64 // numbers the workspaces
	build := func(store *basestore.Store, tenant string) (prep, total time.Duration, err error) {
		req, err := bu.Workspace(r, tmp, proj.Dir, int(seq.Add(1)), base, host)
		if err != nil {
			return 0, 0, err
		}
		req.Tenant = tenant
		defer os.RemoveAll(filepath.Dir(req.Workspace))
		start := time.Now()
		b, err := store.Prepare(ctx, req, io.Discard)
		if err != nil {
			return 0, 0, err
		}
		prep = time.Since(start)
		req.BaseImages = b
		var logBuf strings.Builder
		if _, err := r.Build(ctx, req, &logBuf); err != nil {
			return 0, 0, fmt.Errorf("%v\n%s", err, logBuf.String())
		}
		return prep, time.Since(start), nil
	}

	var cold, warm, coldPrep, warmPrep []time.Duration
	for i := range n {
		store, err := basestore.New(filepath.Join(tmp, fmt.Sprintf("store-%d", i)))
		if err != nil {
			return err
		}
		// A tenant of its own per pair: its cache starts empty.
		tenant := fmt.Sprintf("bench-%d", i)
		p, d, err := build(store, tenant)
		if err != nil {
			return fmt.Errorf("cold build: %w", err)
		}
		coldPrep, cold = append(coldPrep, p), append(cold, d)
		p, d, err = build(store, tenant)
		if err != nil {
			return fmt.Errorf("warm build: %w", err)
		}
		warmPrep, warm = append(warmPrep, p), append(warm, d)
		bu.Log.Printf("pair %d: cold %s (fetch %s), warm %s (fetch %s)", i+1, cold[i], coldPrep[i], warm[i], warmPrep[i])
	}

	// Ten builds of the same base, two at a time, with a fresh store.
	store, err := basestore.New(filepath.Join(tmp, "store-many"))
	if err != nil {
		return err
	}
	c.blobs.Store(0)
	c.bytes.Store(0)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	errs := make(chan error, builds)
	for range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			req, err := bu.Workspace(r, tmp, proj.Dir, int(seq.Add(1)), base, host)
			if err != nil {
				errs <- err
				return
			}
			defer os.RemoveAll(filepath.Dir(req.Workspace))
			b, err := store.Prepare(ctx, req, io.Discard)
			if err != nil {
				errs <- err
				return
			}
			req.BaseImages = b
			if _, err := r.Build(ctx, req, io.Discard); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return fmt.Errorf("one of %d builds: %w", builds, err)
	}

	fmt.Printf("| measure (layer cache %v) | median of %d |\n|---|---|\n", layerCache, n)
	fmt.Printf("| build, cold store (s) | %s |\n", bu.Secs(bu.Median(cold)))
	fmt.Printf("| build, warm store (s) | %s |\n", bu.Secs(bu.Median(warm)))
	fmt.Printf("| warm / cold | %.2f |\n", bu.Median(warm).Seconds()/bu.Median(cold).Seconds())
	fmt.Printf("| base fetch, cold (ms) | %d |\n", bu.Median(coldPrep).Milliseconds())
	fmt.Printf("| base fetch, warm (ms) | %d |\n", bu.Median(warmPrep).Milliseconds())
	fmt.Println()
	fmt.Printf("| %d builds of one base | value |\n|---|---|\n", builds)
	fmt.Printf("| base image (config + layers, bytes) | %d |\n", baseBytes)
	fmt.Printf("| blobs downloaded | %d |\n", c.blobs.Load())
	fmt.Printf("| bytes downloaded | %d |\n", c.bytes.Load())
	fmt.Printf("| downloads of the base | %.2f |\n", float64(c.bytes.Load())/float64(baseBytes))
	return nil
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

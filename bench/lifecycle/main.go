// Command lifecycle measures the gateway's job lifecycle under CI-shaped
// load: the real buildgw (bin/buildgw serve, concurrency -concurrency)
// takes -n submissions of a small context (FROM scratch + COPY) from -c
// concurrent clients, each its own identity, while -pollers pollers GET
// /v1/builds/{id} every -poll-interval. It checks that every build
// succeeded exactly once (no build lost, none duplicated, every pushed
// tag carries the recorded digest), and reports the status endpoint's
// p50/p99 under that load against a baseline of the same pollers on an
// idle gateway, and the gateway's RSS.
//
//	go run ./bench/lifecycle -runs 3
//
// See bench/README.md.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/auth/token"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
)

const targetP99 = 25 * time.Millisecond

type config struct {
	runs         int
	n            int
	clients      int
	pollers      int
	concurrency  int
	pollInterval time.Duration
	baseline     time.Duration
	maxQueued    int
	bin          string
	user         string
	work         string
	keep         bool
	cpuprofile   string
	gatewayEnv   envList
}

// envList is a repeatable -gateway-env K=V flag.
type envList []string

func (e *envList) String() string     { return strings.Join(*e, " ") }
func (e *envList) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	var c config
	flag.IntVar(&c.runs, "runs", 1, "measured runs, each on a fresh gateway")
	flag.IntVar(&c.n, "n", 300, "submissions per run")
	flag.IntVar(&c.clients, "c", 30, "concurrent submitting clients, one identity each")
	flag.IntVar(&c.pollers, "pollers", 200, "concurrent status pollers")
	flag.IntVar(&c.concurrency, "concurrency", 2, "the gateway's build concurrency")
	flag.DurationVar(&c.pollInterval, "poll-interval", 200*time.Millisecond, "pause of each poller between two requests")
	flag.DurationVar(&c.baseline, "baseline", 5*time.Second, "how long the pollers run against the idle gateway first")
	flag.IntVar(&c.maxQueued, "max-queued", 0, "the gateway's queue.max_queued; small values exercise 429 and the client's waiting (0: the default)")
	flag.StringVar(&c.bin, "bin", "bin", "directory with buildgw and kaniko-executor")
	flag.StringVar(&c.user, "sandbox-user", "buildgw-sandbox", "user the sandbox runs as when run as root")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR or /tmp)")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (config, gateway log) for inspection")
	flag.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the gateway (pprof_listen) taken during the load of the last run to this file")
	flag.Var(&c.gatewayEnv, "gateway-env", "K=V added to the gateway's environment only, e.g. GOGC=400 or GODEBUG=gctrace=1 (repeatable)")
	flag.Parse()
	if c.runs < 1 || c.n < 1 || c.clients < 1 || c.pollers < 1 || c.concurrency < 1 {
		fmt.Fprintln(os.Stderr, "lifecycle: -runs, -n, -c, -pollers and -concurrency must be positive")
		os.Exit(2)
	}
	bu.Main("lifecycle", func(ctx context.Context) error { return run(ctx, &c) })
}

type result struct {
	wall              time.Duration
	baseP50, baseP99  time.Duration
	loadP50, loadP99  time.Duration
	polls, pollErrors int
	rssMax, rssEnd    int64
	refused429        int64
	buildMedian       time.Duration
}

func run(ctx context.Context, c *config) error {
	root, err := bu.ModuleRoot()
	if err != nil {
		return err
	}
	if !filepath.IsAbs(c.bin) {
		c.bin = filepath.Join(root, c.bin)
	}
	for _, b := range []string{"buildgw", "kaniko-executor"} {
		if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
			return fmt.Errorf("%s: %w (build bin/ first, see bench/README.md)", b, err)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup(c.user); err != nil {
			return fmt.Errorf("sandbox user %s: %w (scripts/setup creates it)", c.user, err)
		}
	}
	var results []result
	for i := range c.runs {
		bu.Log.Printf("run %d of %d: %d submissions from %d clients, %d pollers, concurrency %d", i+1, c.runs, c.n, c.clients, c.pollers, c.concurrency)
		r, err := runOnce(ctx, c)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		results = append(results, r)
	}
	report(c, results)
	return nil
}

func runOnce(ctx context.Context, c *config) (result, error) {
	var res result
	tmp, err := os.MkdirTemp(c.work, "buildgw-bench-lifecycle-")
	if err != nil {
		return res, err
	}
	if c.keep {
		bu.Log.Printf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	// The sandbox user must reach its workspace under the state directory.
	if err := os.Chmod(tmp, 0o711); err != nil {
		return res, err
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	regHost := reg.Listener.Addr().String()

	cfg := gateway.DefaultConfig()
	tokens := make([]string, c.clients)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("bench-client-%02d-%d", i, rand.Int64())
		cfg.Tokens = append(cfg.Tokens, gateway.Token{Name: fmt.Sprintf("client%02d", i), SHA256: token.HashToken(tokens[i])})
	}
	pol := testgateway.Policy{Rules: []testgateway.Rule{{
		Name:  "bench",
		Match: map[string]string{"kind": "token"},
		Allow: testgateway.Allow{Destinations: []string{regHost + "/bench/**"}, From: []string{regHost}},
	}}}
	pprofAddr := ""
	if c.cpuprofile != "" {
		if pprofAddr, err = testenv.LoopbackAddr(); err != nil {
			return res, err
		}
	}
	cfg.StateDir = filepath.Join(tmp, "state")
	cfg.Concurrency = c.concurrency
	if c.maxQueued > 0 {
		cfg.Queue.MaxQueued = c.maxQueued
	}
	cfg.PprofListen = pprofAddr
	cfg.Registries = map[string]gateway.Registry{regHost: {Insecure: true}}
	cfg.Runners.Kaniko.Executor = filepath.Join(c.bin, "kaniko-executor")
	cfg.Runners.Kaniko.User = c.user
	logPath := filepath.Join(tmp, "gateway.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return res, err
	}
	defer logf.Close()
	gw, err := testgateway.Launch(ctx, cfg, testgateway.WithBinary(filepath.Join(c.bin, "buildgw")),
		testgateway.WithPolicy(pol), testgateway.WithEnv(c.gatewayEnv...), testgateway.WithOutput(logf))
	if err != nil {
		return res, err
	}
	defer gw.Stop()
	url := gw.URL
	pid := gw.Cmd.Process.Pid
	sampler := bu.StartSampler(pid, 100*time.Millisecond)

	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: c.pollers + c.clients, MaxIdleConnsPerHost: c.pollers + c.clients}}
	clients := make([]*client.Client, c.clients)
	var refused atomic.Int64
	for i := range clients {
		clients[i], err = client.New(url, tokens[i], client.WithHTTPClient(hc), client.WithQueueWait(30*time.Minute),
			client.WithWaitNotice(func(time.Duration, string) { refused.Add(1) }))
		if err != nil {
			return res, err
		}
	}

	// One build per client first, so the pollers have finished builds to
	// read in the baseline.
	var mu sync.Mutex
	var known []polled
	ctxArchive, err := smallContext()
	if err != nil {
		return res, err
	}
	submit := func(ci, k int) (string, error) {
		dest := fmt.Sprintf("%s/bench/c%02d:b%03d", regHost, ci, k)
		// NoCache: every submission is the same context, and all but each
		// client's first would come from its result cache without a build.
		acc, err := clients[ci].Submit(ctx, api.BuildSpec{Destinations: []string{dest}, NoCache: true},
			func() io.ReadCloser { return io.NopCloser(bytes.NewReader(ctxArchive)) }, nil)
		if err != nil {
			return "", fmt.Errorf("client %d submission %d: %w", ci, k, err)
		}
		mu.Lock()
		known = append(known, polled{acc.ID, tokens[ci]})
		mu.Unlock()
		return acc.ID, nil
	}
	for ci := range c.clients {
		id, err := submit(ci, 999)
		if err != nil {
			return res, err
		}
		b, err := bu.WaitFinal(ctx, clients[ci], id, 500*time.Millisecond)
		if err != nil {
			return res, err
		}
		if b.Status != api.StatusSucceeded {
			// A broken setup (an executor built with cgo cannot run in the
			// sandbox's root) shows here, not after the whole load.
			return res, fmt.Errorf("warm-up build %s = %s %q, want succeeded (see its log under %s with -keep)", id, b.Status, b.Error, filepath.Join(tmp, "state", "logs"))
		}
	}

	bu.Log.Printf("baseline: %d pollers on the idle gateway for %s", c.pollers, c.baseline)
	base := poll(ctx, hc, url, c, func() []polled { mu.Lock(); defer mu.Unlock(); return known }, c.baseline, nil)
	res.baseP50, res.baseP99 = bu.Percentile(base.lat, 50), bu.Percentile(base.lat, 99)

	bu.Log.Printf("load: %d submissions", c.n)
	start := time.Now()
	type sub struct {
		client, k int
		id        string
		build     *api.Build
	}
	subs := make([]sub, c.n)
	for i := range subs {
		subs[i] = sub{client: i % c.clients, k: i / c.clients}
	}
	allDone := make(chan struct{})
	var loadPoll pollResult
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		loadPoll = poll(ctx, hc, url, c, func() []polled { mu.Lock(); defer mu.Unlock(); return known }, 0, allDone)
	}()
	profDone := make(chan error, 1)
	if pprofAddr != "" {
		// Profile the middle of the load: from a few seconds in for half
		// of the expected wall time (about 1 s per build per slot).
		secs := max(5, c.n/c.concurrency/2)
		go func() { profDone <- cpuProfile(ctx, "http://"+pprofAddr, 3*time.Second, secs, c.cpuprofile) }()
	} else {
		profDone <- nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, c.clients)
	for ci := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Submit all of this client's builds, then wait for them, as a
			// pipeline of parallel CI jobs does.
			for i := range subs {
				if subs[i].client != ci {
					continue
				}
				id, err := submit(ci, subs[i].k)
				if err != nil {
					errs <- err
					return
				}
				subs[i].id = id
			}
			for i := range subs {
				if subs[i].client != ci {
					continue
				}
				b, err := bu.WaitFinal(ctx, clients[ci], subs[i].id, 500*time.Millisecond)
				if err != nil {
					errs <- err
					return
				}
				subs[i].build = b
			}
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	close(allDone)
	<-pollDone
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	if err := <-profDone; err != nil {
		return res, err
	}
	res.rssMax, _ = sampler.Stop()
	if m, err := bu.ReadMem(pid); err == nil {
		res.rssEnd = m.RSS
	}
	res.loadP50, res.loadP99 = bu.Percentile(loadPoll.lat, 50), bu.Percentile(loadPoll.lat, 99)
	res.polls, res.pollErrors = len(loadPoll.lat), loadPoll.errors
	res.refused429 = refused.Load()

	// Every submission is one build that succeeded and pushed its digest;
	// every identity has exactly its builds.
	seen := map[string]bool{}
	var durs []time.Duration
	for _, s := range subs {
		b := s.build
		if b == nil || b.Status != api.StatusSucceeded {
			return res, fmt.Errorf("build %s of client %d = %+v, want succeeded", s.id, s.client, b)
		}
		if seen[b.ID] {
			return res, fmt.Errorf("build %s reported for two submissions", b.ID)
		}
		seen[b.ID] = true
		dest := b.Destinations[0]
		got, err := crane.Digest(dest, crane.Insecure)
		if err != nil || got != b.Digest {
			return res, fmt.Errorf("%s in the registry = %s, %v, want %s", dest, got, err, b.Digest)
		}
		durs = append(durs, b.FinishedAt.Sub(*b.StartedAt))
	}
	for ci, cl := range clients {
		list, err := cl.List(ctx)
		if err != nil {
			return res, err
		}
		want := (c.n+c.clients-1-ci)/c.clients + 1 // its share plus the warm-up build
		if len(list) != want {
			return res, fmt.Errorf("client %d has %d builds, want %d (lost or duplicated)", ci, len(list), want)
		}
	}
	res.buildMedian = bu.Median(durs)
	bu.Log.Printf("all %d builds succeeded once in %s; %d polls, %d refused submissions waited out", c.n, res.wall.Round(time.Millisecond), res.polls, res.refused429)
	return res, nil
}

type polled struct{ id, token string }

type pollResult struct {
	lat    []time.Duration
	errors int
}

// poll runs c.pollers pollers that GET the status of random known builds
// for d, or until stop is closed.
func poll(ctx context.Context, hc *http.Client, url string, c *config, known func() []polled, d time.Duration, stop <-chan struct{}) pollResult {
	if stop == nil {
		ch := make(chan struct{})
		time.AfterFunc(d, func() { close(ch) })
		stop = ch
	}
	var mu sync.Mutex
	var out pollResult
	var wg sync.WaitGroup
	for range c.pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			// Spread the pollers over the interval, as independent CI jobs are.
			time.Sleep(rand.N(c.pollInterval + 1))
			for {
				select {
				case <-stop:
					mu.Lock()
					out.lat = append(out.lat, lat...)
					out.errors += errs
					mu.Unlock()
					return
				case <-ctx.Done():
					return
				default:
				}
				ks := known()
				p := ks[rand.IntN(len(ks))]
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/builds/"+p.id, nil)
				req.Header.Set("Authorization", "Bearer "+p.token)
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				lat = append(lat, time.Since(t0))
				if err != nil || resp.StatusCode != http.StatusOK {
					errs++
				}
				time.Sleep(c.pollInterval)
			}
		}()
	}
	wg.Wait()
	return out
}

// cpuProfile waits delay, then takes a CPU profile of secs seconds from
// the gateway's pprof endpoint into path.
func cpuProfile(ctx context.Context, base string, delay time.Duration, secs int, path string) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(delay):
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	bu.Log.Printf("gateway CPU profile of %ds written to %s", secs, path)
	return f.Close()
}

// smallContext is a FROM scratch + COPY build: fast, so the run measures
// the gateway and not the builds.
func smallContext() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{
		"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n",
		"hello.txt":  "hello from bench/lifecycle\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)}); err != nil {
			return nil, err
		}
		io.WriteString(tw, body)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func report(c *config, rs []result) {
	fmt.Printf("## bench/lifecycle: %d submissions, %d clients, %d pollers every %s, concurrency %d (load %s)\n\n",
		c.n, c.clients, c.pollers, c.pollInterval, c.concurrency, bu.LoadAvg())
	fmt.Println("| run | wall s | build median s | 429 waits | polls | poll errors | idle p50 ms | idle p99 ms | load p50 ms | load p99 ms | p99 ratio | RSS max MiB | RSS end MiB |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	var walls, bp50, bp99, lp50, lp99, builds []time.Duration
	var rssMax, rssEnd []int64
	for i, r := range rs {
		fmt.Printf("| %d | %s | %s | %d | %d | %d | %s | %s | %s | %s | %.2f | %s | %s |\n", i+1, bu.Secs(r.wall), bu.Secs(r.buildMedian), r.refused429,
			r.polls, r.pollErrors, ms(r.baseP50), ms(r.baseP99), ms(r.loadP50), ms(r.loadP99), float64(r.loadP99)/float64(max(r.baseP99, 1)), bu.MiB(r.rssMax), bu.MiB(r.rssEnd))
		walls, bp50, bp99, lp50, lp99, builds = append(walls, r.wall), append(bp50, r.baseP50), append(bp99, r.baseP99), append(lp50, r.loadP50), append(lp99, r.loadP99), append(builds, r.buildMedian)
		rssMax, rssEnd = append(rssMax, r.rssMax), append(rssEnd, r.rssEnd)
	}
	mlp99, mbp99 := bu.Median(lp99), bu.Median(bp99)
	fmt.Printf("| median | %s | %s | | | | %s | %s | %s | %s | %.2f | %s | %s |\n\n", bu.Secs(bu.Median(walls)), bu.Secs(bu.Median(builds)),
		ms(bu.Median(bp50)), ms(mbp99), ms(bu.Median(lp50)), ms(mlp99), float64(mlp99)/float64(max(mbp99, 1)), bu.MiB(bu.MedianInt(rssMax)), bu.MiB(bu.MedianInt(rssEnd)))
	verdict := "met"
	if mlp99 >= targetP99 {
		verdict = "NOT met"
	}
	fmt.Printf("Every build succeeded exactly once in every run. Status p99 under load %s ms: target < %s ms %s.\n", ms(mlp99), ms(targetP99), verdict)
}

// Command authz measures what authentication and authorization cost a
// request: an in-process gateway (internal/testgateway: gateway.New, as
// buildgw serve builds it) with a GitLab-shaped OIDC issuer, a policy and
// an audit file, and a loopback load generator of -c concurrent workers
// sending -n requests per scenario (or until -max-time):
//
//	(a) POST /v1/builds refused by policy: a valid GitLab JWT (RS256,
//	    verified on every request), a small gzip context, a destination
//	    outside the project's repository: 403, and an audit record;
//	(b) GET /v1/builds/{id} of a finished build with a valid JWT: 200;
//	(c) for information, POST /v1/builds with a tampered JWT: 401, and
//	    how often that makes the gateway refetch the issuer's JWKS.
//
// It prints p50/p90/p99 per run and the medians over -runs runs, and
// whether p99 < 5 ms for (a) and (b).
//
//	go run ./bench/authz -runs 3
//
// See bench/README.md.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/buildgw/buildgw/api"
	apiclient "github.com/buildgw/buildgw/api/client"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/internal/testoidc"
)

const (
	aud    = "https://buildgw.bench"
	target = 5 * time.Millisecond
)

type config struct {
	runs     int
	n        int
	workers  int
	warmup   int
	maxTime  time.Duration
	executor string
	user     string
	work     string
	attack   bool
	cpuprof  string
	keep     bool
	verbose  bool
}

func main() {
	var c config
	flag.IntVar(&c.runs, "runs", 3, "measured runs of every scenario")
	flag.IntVar(&c.n, "n", 2000, "requests per scenario and run")
	flag.IntVar(&c.workers, "c", 4, "concurrent workers (keep-alive connections)")
	flag.IntVar(&c.warmup, "warmup", 200, "requests per scenario before the first run, not measured")
	flag.DurationVar(&c.maxTime, "max-time", 30*time.Second, "bound on one scenario's run; fewer than -n requests are then measured")
	flag.StringVar(&c.executor, "executor", "bin/kaniko-executor", "kaniko executor (scripts/setup builds it)")
	flag.StringVar(&c.user, "sandbox-user", "buildgw-sandbox", "user the sandbox runs as when run as root")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR or /tmp)")
	flag.BoolVar(&c.attack, "attack", true, "also run (c), tampered JWTs")
	flag.StringVar(&c.cpuprof, "cpuprofile", "", "write a CPU profile of the measured runs (gateway and load generator share the process) to this file")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (policy, audit log) for inspection")
	flag.BoolVar(&c.verbose, "v", false, "copy the gateway's log to stderr")
	flag.Parse()
	if c.runs < 1 || c.n < 1 || c.workers < 1 || c.warmup < 0 || c.maxTime <= 0 {
		fmt.Fprintln(os.Stderr, "authz: -runs, -n, -c and -max-time must be positive, -warmup not negative")
		os.Exit(2)
	}
	bu.Main("authz", func(ctx context.Context) error { return run(ctx, &c) })
}

// scenario is one kind of request and the status it must get.
type scenario struct {
	key, label string
	want       int
	// newRequest builds request i; bodies are prebuilt, so this is cheap.
	newRequest func(i int) *http.Request
	judged     bool // counted against the p99 target
}

// result is one run of one scenario.
type result struct {
	n             int
	errs          int
	firstErr      string
	p50, p90, p99 time.Duration
	max           time.Duration
	rps           float64
	jwksFetches   int
}

func run(ctx context.Context, c *config) error {
	root, err := bu.ModuleRoot()
	if err != nil {
		return err
	}
	if !filepath.IsAbs(c.executor) {
		c.executor = filepath.Join(root, c.executor)
	}
	if _, err := os.Stat(c.executor); err != nil {
		return fmt.Errorf("kaniko executor: %w (scripts/setup builds bin/kaniko-executor)", err)
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup(c.user); err != nil {
			return fmt.Errorf("sandbox user %s: %w (scripts/setup creates it)", c.user, err)
		}
	}
	tmp, err := os.MkdirTemp(c.work, "buildgw-bench-authz-")
	if err != nil {
		return err
	}
	if c.keep {
		bu.Log.Printf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	// The sandbox user must reach its workspace under the state directory.
	if err := os.Chmod(tmp, 0o711); err != nil {
		return err
	}

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	regHost := reg.Listener.Addr().String()
	gitlab, err := testoidc.New(testoidc.Options{})
	if err != nil {
		return err
	}
	defer gitlab.Close()

	pol := testgateway.Policy{Rules: []testgateway.Rule{{
		Name:  "gitlab-protected",
		Match: map[string]string{"kind": "oidc", "issuer": gitlab.URL, "ref_protected": "true"},
		Allow: testgateway.Allow{Destinations: []string{regHost + "/{project_path}", regHost + "/{project_path}/*"}, From: []string{regHost}},
	}}}
	cfg := gateway.DefaultConfig()
	cfg.StateDir = filepath.Join(tmp, "state")
	cfg.Concurrency = 1
	cfg.OIDCIssuers = []gateway.OIDCIssuer{{Name: "gitlab", URL: gitlab.URL, Audiences: []string{aud}, Algorithms: []string{"RS256"}}}
	cfg.Audit.File = filepath.Join(tmp, "audit.log")
	cfg.Registries = map[string]gateway.Registry{regHost: {Insecure: true}}
	cfg.Runners.Kaniko.Executor = c.executor
	cfg.Runners.Kaniko.User = c.user
	opts := []testgateway.Option{testgateway.WithPolicy(pol), testgateway.WithLogLevel(slog.LevelWarn)}
	if c.verbose {
		opts = append(opts, testgateway.WithOutput(os.Stderr))
	}
	g, err := testgateway.Launch(ctx, cfg, opts...)
	if err != nil {
		return fmt.Errorf("starting the gateway: %w", err)
	}
	defer func() {
		if err := g.Stop(); err != nil {
			bu.Log.Printf("gateway: %v", err)
		}
	}()
	url := g.URL

	now := time.Now()
	claims := gitlab.GitLabClaims(aud, testoidc.GitLab{ProjectPath: "group/app", Protected: true}, now)
	claims["exp"] = now.Add(2 * time.Hour).Unix()
	tok, err := gitlab.Mint(claims)
	if err != nil {
		return err
	}
	tampered, err := testoidc.Tamper(tok, func(c map[string]any) { c["project_path"] = "group/other" })
	if err != nil {
		return err
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: c.workers * 2, MaxIdleConnsPerHost: c.workers * 2, IdleConnTimeout: time.Minute,
	}}
	defer client.CloseIdleConnections()

	// One build the GET scenario reads: FROM scratch, pushed to the
	// in-memory registry, finished before anything is measured.
	ct, okBody, err := multipartBody(api.BuildSpec{Destinations: []string{regHost + "/group/app:bench"}},
		map[string]string{"Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n", "a.txt": "a\n"})
	if err != nil {
		return err
	}
	id, err := submitOne(ctx, client, url, tok, ct, okBody)
	if err != nil {
		return err
	}
	bu.Log.Printf("build %s accepted; waiting for it to finish", id)
	cl, err := apiclient.New(url, tok, apiclient.WithHTTPClient(client))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	b, err := bu.WaitFinal(wctx, cl, id, 100*time.Millisecond)
	cancel()
	if err != nil {
		return fmt.Errorf("waiting for build %s: %w", id, err)
	}
	bu.Log.Printf("build %s %s", id, b.Status)

	// The refused submission: small context, a destination of another
	// project. Policy refuses it on the spec, before the context is read.
	ct, deniedBody, err := multipartBody(api.BuildSpec{Destinations: []string{regHost + "/group/other:1"}},
		map[string]string{"Dockerfile": "FROM " + regHost + "/library/busybox:latest\nCOPY . /src\n", "a.txt": strings.Repeat("x", 1024)})
	if err != nil {
		return err
	}
	post := func(bearer string) func(int) *http.Request {
		return func(int) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url+"/v1/builds", bytes.NewReader(deniedBody))
			r.Header.Set("Content-Type", ct)
			r.Header.Set("Authorization", "Bearer "+bearer)
			return r
		}
	}
	scenarios := []scenario{
		{key: "a", label: "(a) POST /v1/builds refused by policy, JWT", want: http.StatusForbidden, newRequest: post(tok), judged: true},
		{key: "b", label: "(b) GET /v1/builds/{id}, JWT", want: http.StatusOK, judged: true, newRequest: func(int) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, url+"/v1/builds/"+id, nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			return r
		}},
	}
	if c.attack {
		scenarios = append(scenarios, scenario{key: "c", label: "(c) POST /v1/builds, tampered JWT (info)", want: http.StatusUnauthorized, newRequest: post(tampered)})
	}

	// Check each scenario once, then warm up.
	for _, s := range scenarios {
		resp, err := client.Do(s.newRequest(0).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("%s: %w", s.label, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != s.want {
			return fmt.Errorf("%s: got %d %s, want %d", s.label, resp.StatusCode, b, s.want)
		}
		if c.warmup > 0 {
			load(ctx, client, s, c.workers, c.warmup, c.maxTime, nil)
		}
	}

	if c.cpuprof != "" {
		f, err := os.Create(c.cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("## bench/authz — %d workers, %d requests per scenario and run, GOMAXPROCS %d, load %s\n\n",
		c.workers, c.n, runtime.GOMAXPROCS(0), bu.LoadAvg())
	fmt.Println("| run | scenario | requests | errors | req/s | p50 | p90 | p99 | max | JWKS fetches |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	all := map[string][]result{}
	for r := 1; r <= c.runs; r++ {
		for _, s := range scenarios {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res := load(ctx, client, s, c.workers, c.n, c.maxTime, gitlab)
			all[s.key] = append(all[s.key], res)
			fmt.Printf("| %d | %s | %d | %d | %.0f | %s | %s | %s | %s | %d |\n", r, s.label, res.n, res.errs, res.rps,
				ms(res.p50), ms(res.p90), ms(res.p99), ms(res.max), res.jwksFetches)
			if res.errs > 0 {
				bu.Log.Printf("%s: %d errors, first: %s", s.label, res.errs, res.firstErr)
			}
		}
	}

	fmt.Printf("\n### Medians of %d runs (load %s)\n\n", c.runs, bu.LoadAvg())
	fmt.Println("| scenario | req/s | p50 | p90 | p99 | p99 < 5 ms |")
	fmt.Println("|---|---|---|---|---|---|")
	pass := true
	for _, s := range scenarios {
		rs := all[s.key]
		p := func(f func(result) time.Duration) time.Duration {
			var ds []time.Duration
			for _, r := range rs {
				ds = append(ds, f(r))
			}
			return bu.Median(ds)
		}
		var rps []int64
		errs := 0
		for _, r := range rs {
			rps = append(rps, int64(r.rps))
			errs += r.errs
		}
		p99 := p(func(r result) time.Duration { return r.p99 })
		verdict := "n/a (info)"
		if s.judged {
			verdict = "PASS"
			if p99 >= target || errs > 0 {
				verdict, pass = "FAIL", false
			}
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %s |\n", s.label, bu.MedianInt(rps),
			ms(p(func(r result) time.Duration { return r.p50 })), ms(p(func(r result) time.Duration { return r.p90 })), ms(p99), verdict)
	}
	if pass {
		fmt.Println("\nTarget p99 < 5 ms for (a) and (b): PASS")
	} else {
		fmt.Println("\nTarget p99 < 5 ms for (a) and (b): FAIL")
	}
	return nil
}

// load sends n requests of s with the given number of workers, or as many
// as fit in maxTime, and returns their latency percentiles. With is set,
// it also counts the issuer's JWKS fetches during the run.
func load(ctx context.Context, client *http.Client, s scenario, workers, n int, maxTime time.Duration, is *testoidc.Issuer) result {
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	var next atomic.Int64
	var errs atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, workers)
	jwksBefore := 0
	if is != nil {
		_, jwksBefore = is.Counts()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, n/workers+1)
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					break
				}
				req := s.newRequest(i).WithContext(ctx)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != s.want {
						err = fmt.Errorf("status %d, want %d", resp.StatusCode, s.want)
					}
				}
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break // the time bound, not a failure
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, d)
			}
			lat[w] = mine
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var ds []time.Duration
	for _, l := range lat {
		ds = append(ds, l...)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	r := result{n: len(ds), errs: int(errs.Load())}
	if v := firstErr.Load(); v != nil {
		r.firstErr = v.(string)
	}
	if len(ds) > 0 {
		r.p50, r.p90, r.p99, r.max = bu.Percentile(ds, 50), bu.Percentile(ds, 90), bu.Percentile(ds, 99), ds[len(ds)-1]
		r.rps = float64(len(ds)) / elapsed.Seconds()
	}
	if is != nil {
		_, after := is.Counts()
		r.jwksFetches = after - jwksBefore
	}
	return r
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func submitOne(ctx context.Context, c *http.Client, url, tok, ct string, body []byte) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/builds", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("submitting the build to read: %d %s", resp.StatusCode, b)
	}
	var acc api.Accepted
	if err := json.Unmarshal(b, &acc); err != nil {
		return "", err
	}
	return acc.ID, nil
}

func multipartBody(spec api.BuildSpec, files map[string]string) (string, []byte, error) {
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			return "", nil, err
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			return "", nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return "", nil, err
	}
	if err := zw.Close(); err != nil {
		return "", nil, err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	sw, err := mw.CreateFormField("spec")
	if err != nil {
		return "", nil, err
	}
	if err := json.NewEncoder(sw).Encode(spec); err != nil {
		return "", nil, err
	}
	cw, err := mw.CreateFormFile("context", "context.tar.gz")
	if err != nil {
		return "", nil, err
	}
	if _, err := cw.Write(tgz.Bytes()); err != nil {
		return "", nil, err
	}
	if err := mw.Close(); err != nil {
		return "", nil, err
	}
	return mw.FormDataContentType(), body.Bytes(), nil
}

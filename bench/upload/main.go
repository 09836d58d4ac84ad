// Command upload measures how fast the gateway takes in a large build
// context, and how much memory that costs it: a 1 GiB plain tar, generated
// on the fly, is uploaded with curl (a) to a trivial sink that discards the
// body and (b) to a config-file gateway's POST /v1/builds, which extracts
// it into a workspace before answering. The build is cancelled as soon as
// it is accepted.
//
//	go run ./bench/upload -runs 3
//
// See bench/README.md.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth/token"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testgateway"
)

type config struct {
	runs     int
	files    int
	fileSize int64
	sample   time.Duration
	bin      string
	work     string
	keep     bool
	verbose  bool
	// workspaces is the gateway's workspaces setting.
	workspaces string
}

func main() {
	var c config
	flag.IntVar(&c.runs, "runs", 3, "uploads to each of sink and gateway")
	flag.IntVar(&c.files, "files", 64, "files in the context")
	flag.Int64Var(&c.fileSize, "file-size", 16<<20, "bytes per file")
	flag.DurationVar(&c.sample, "sample", 50*time.Millisecond, "VmRSS sampling interval of the gateway")
	flag.StringVar(&c.bin, "bin", "bin", "directory holding buildgw and kaniko-executor (scripts/setup builds them)")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR or /tmp); the gateway's state directory goes there, so it needs room for one context")
	flag.StringVar(&c.workspaces, "workspaces", "auto", "the gateway's workspaces setting: auto (memory when run as root), memory (a tmpfs the gateway mounts; the context then takes memory, not disk) or disk")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs) for inspection")
	flag.BoolVar(&c.verbose, "v", false, "also copy the gateway's log to stderr")
	flag.Parse()
	if c.runs < 1 || c.files < 1 || c.fileSize < 1 || c.sample <= 0 {
		fmt.Fprintln(os.Stderr, "upload: -runs, -files, -file-size and -sample must be positive")
		os.Exit(2)
	}
	bu.Main("upload", func(ctx context.Context) error { return run(ctx, &c) })
}

type env struct {
	c         *config
	tmp       string
	curl      string
	gw        *testgateway.Gateway
	gwLog     string
	gwLogFile *os.File
	token     string
	authHdr   string // curl header file holding the token, kept off the command line
	sinkURL   string
	sinkLast  atomic.Int64
	pool      []byte
}

func run(ctx context.Context, c *config) error {
	curl, err := exec.LookPath("curl")
	if err != nil {
		return errors.New("curl not found: install it (apt-get install -y curl)")
	}
	root, err := bu.ModuleRoot()
	if err != nil {
		return err
	}
	binDir := c.bin
	if !filepath.IsAbs(binDir) {
		binDir = filepath.Join(root, binDir)
	}
	gwBin, exe := filepath.Join(binDir, "buildgw"), filepath.Join(binDir, "kaniko-executor")
	for _, b := range []string{gwBin, exe} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s missing: run scripts/setup first", b)
		}
	}
	e := &env{c: c, curl: curl}

	e.tmp, err = os.MkdirTemp(c.work, "buildgw-bench-upload-")
	if err != nil {
		return err
	}
	defer func() {
		if c.keep {
			bu.Log.Printf("kept %s", e.tmp)
			return
		}
		if err := os.RemoveAll(e.tmp); err != nil {
			bu.Log.Printf("removing %s: %v", e.tmp, err)
		}
	}()
	// The sandbox user must be able to traverse to the state directory.
	if err := os.Chmod(e.tmp, 0o711); err != nil {
		return err
	}

	// A 16 MiB pool of PRNG bytes, generated once; every 1 MiB chunk of the
	// context is a slice of it at a different offset, so producing the
	// stream costs next to nothing and no two files are alike.
	e.pool = make([]byte, 16<<20)
	var s uint64 = 0x243f6a8885a308d3
	for i := 0; i+8 <= len(e.pool); i += 8 {
		s += 0xa0761d6478bd642f
		hi, lo := bits.Mul64(s, s^0xe7037ed1a0b428db)
		v := hi ^ lo
		for k := 0; k < 8; k++ {
			e.pool[i+k] = byte(v >> (8 * k))
		}
	}

	if err := e.startSink(ctx); err != nil {
		return err
	}
	if err := e.startGateway(ctx, gwBin, exe); err != nil {
		return err
	}
	defer func() {
		e.gw.Stop()
		e.gwLogFile.Close()
	}()

	return e.bench(ctx)
}

// ---------------------------------------------------------------------
// the context

const dockerfile = "FROM scratch\n"

// writeContext writes the context as a plain tar: a Dockerfile, then the
// files of pseudo-random content. It returns the tar's length.
func (e *env) writeContext(w io.Writer) (int64, error) {
	cw := &bu.CountWriter{W: w}
	tw := tar.NewWriter(cw)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), ModTime: mtime}); err != nil {
		return cw.N(), err
	}
	if _, err := io.WriteString(tw, dockerfile); err != nil {
		return cw.N(), err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: mtime}); err != nil {
		return cw.N(), err
	}
	const chunk = 1 << 20
	for i := 0; i < e.c.files; i++ {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data/f%03d.bin", i), Mode: 0o644, Size: e.c.fileSize, ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return cw.N(), err
		}
		for off, j := int64(0), 0; off < e.c.fileSize; j++ {
			n := min(chunk, e.c.fileSize-off)
			start := (i*7919 + j*104729) * 4096 % (len(e.pool) - chunk)
			if _, err := tw.Write(e.pool[start : start+int(n)]); err != nil {
				return cw.N(), err
			}
			off += n
		}
	}
	err := tw.Close()
	return cw.N(), err
}

// ---------------------------------------------------------------------
// the sink and the gateway

func (e *env) startSink(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			buf := make([]byte, 1<<20)
			var n int64
			for {
				k, err := r.Body.Read(buf)
				n += int64(k)
				if err != nil {
					break
				}
			}
			e.sinkLast.Store(n)
			fmt.Fprintf(w, "%d\n", n)
		}),
	}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	e.sinkURL = "http://" + ln.Addr().String() + "/sink"
	bu.Log.Printf("sink at %s", e.sinkURL)
	return nil
}

func (e *env) startGateway(ctx context.Context, gwBin, exe string) error {
	var tb [24]byte
	if _, err := rand.Read(tb[:]); err != nil {
		return err
	}
	e.token = "bench_" + hex.EncodeToString(tb[:])
	e.authHdr = filepath.Join(e.tmp, "auth.header")
	if err := os.WriteFile(e.authHdr, []byte("Authorization: Bearer "+e.token+"\n"), 0o600); err != nil {
		return err
	}
	cfg := gateway.DefaultConfig()
	cfg.StateDir = filepath.Join(e.tmp, "state")
	cfg.Concurrency = 1
	cfg.Context.MaxBytes = 2 << 30
	cfg.Tokens = []gateway.Token{{Name: "bench", SHA256: token.HashToken(e.token)}}
	cfg.Workspaces = e.c.workspaces
	cfg.Runners.Kaniko.Executor = exe
	// The bench token may push to a destination never used; FROM scratch
	// pulls nothing.
	cfg.Registries = map[string]gateway.Registry{"127.0.0.1:9": {Insecure: true}}
	pol := testgateway.Policy{Rules: []testgateway.Rule{{
		Name:  "bench",
		Match: map[string]string{"kind": "token", "name": "bench"},
		Allow: testgateway.Allow{Destinations: []string{"127.0.0.1:9/bench/**"}},
	}}}

	e.gwLog = filepath.Join(e.tmp, "gateway.log")
	lf, err := os.Create(e.gwLog)
	if err != nil {
		return err
	}
	e.gwLogFile = lf
	var out io.Writer = lf
	if e.c.verbose {
		out = io.MultiWriter(lf, os.Stderr)
	}
	e.gw, err = testgateway.Launch(ctx, cfg, testgateway.WithBinary(gwBin), testgateway.WithPolicy(pol), testgateway.WithOutput(out))
	if err != nil {
		return fmt.Errorf("starting gateway: %w", err)
	}
	bu.Log.Printf("gateway pid %d at %s (config %s)", e.gw.Cmd.Process.Pid, e.gw.URL, e.gw.ConfigFile)
	return nil
}

// ---------------------------------------------------------------------
// the runs

type result struct {
	wall  time.Duration
	bytes int64 // request body bytes
	// gateway only
	rss0, hwm, sampled int64
	samples            int
	status             api.Status
}

func (r *result) mibps() float64 { return float64(r.bytes) / (1 << 20) / r.wall.Seconds() }

// curlUpload runs curl with the body that produce writes to its stdin, and
// times it from start to exit. It returns curl's stdout.
func (e *env) curlUpload(ctx context.Context, args []string, produce func(io.Writer) (int64, error)) (time.Duration, int64, []byte, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, 0, nil, err
	}
	// A larger pipe lets curl read in big blocks; the same for every run.
	syscall.Syscall(syscall.SYS_FCNTL, pw.Fd(), 1031 /* F_SETPIPE_SZ */, 1<<20)
	cmd := exec.CommandContext(ctx, e.curl, args...)
	cmd.Stdin = pr
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return 0, 0, nil, err
	}
	pr.Close()
	type res struct {
		n   int64
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := produce(pw)
		pw.Close()
		done <- res{n, err}
	}()
	werr := cmd.Wait()
	d := time.Since(start)
	p := <-done
	if werr != nil {
		return d, p.n, stdout.Bytes(), fmt.Errorf("curl: %v: %s", werr, strings.TrimSpace(stderr.String()))
	}
	if p.err != nil {
		return d, p.n, stdout.Bytes(), fmt.Errorf("writing the body: %w", p.err)
	}
	return d, p.n, stdout.Bytes(), nil
}

func (e *env) sinkRun(ctx context.Context) (*result, error) {
	e.sinkLast.Store(-1)
	args := []string{"-sS", "--fail", "-o", "/dev/null", "-H", "Expect:", "-T", "-", e.sinkURL}
	d, n, _, err := e.curlUpload(ctx, args, e.writeContext)
	if err != nil {
		return nil, err
	}
	if got := e.sinkLast.Load(); got != n {
		return nil, fmt.Errorf("sink received %d bytes, sent %d", got, n)
	}
	return &result{wall: d, bytes: n}, nil
}

func (e *env) gatewayRun(ctx context.Context, k int) (*result, error) {
	pid := e.gw.Cmd.Process.Pid
	m0, err := bu.ReadMem(pid)
	if err != nil {
		return nil, err
	}
	if !bu.ResetHWM(pid) {
		return nil, errors.New("cannot reset the gateway's VmHWM (/proc/PID/clear_refs); run as root or as the gateway's user")
	}
	spec, _ := json.Marshal(api.BuildSpec{Destinations: []string{fmt.Sprintf("127.0.0.1:9/bench/upload:%d", k)}})
	boundary := multipart.NewWriter(io.Discard).Boundary()
	produce := func(w io.Writer) (int64, error) {
		cw := &bu.CountWriter{W: w}
		mw := multipart.NewWriter(cw)
		if err := mw.SetBoundary(boundary); err != nil {
			return 0, err
		}
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="spec"; filename="spec.json"`)
		h.Set("Content-Type", "application/json")
		pw, err := mw.CreatePart(h)
		if err != nil {
			return cw.N(), err
		}
		if _, err := pw.Write(spec); err != nil {
			return cw.N(), err
		}
		h = textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="context"; filename="context.tar"`)
		h.Set("Content-Type", "application/x-tar")
		if pw, err = mw.CreatePart(h); err != nil {
			return cw.N(), err
		}
		if _, err := e.writeContext(pw); err != nil {
			return cw.N(), err
		}
		err = mw.Close()
		return cw.N(), err
	}
	args := []string{"-sS", "-X", "POST", "-H", "Expect:", "-H", "@" + e.authHdr,
		"-H", "Content-Type: multipart/form-data; boundary=" + boundary,
		"-w", "\n%{http_code}\n", "-T", "-", e.gw.URL + "/v1/builds"}
	smp := bu.StartSampler(pid, e.c.sample)
	d, n, out, err := e.curlUpload(ctx, args, produce)
	sampled, samples := smp.Stop()
	if err != nil {
		return nil, err
	}
	m1, err := bu.ReadMem(pid)
	if err != nil {
		return nil, err
	}
	// -w appends "\n<status code>\n" to the answer.
	trimmed := strings.TrimSpace(string(out))
	body, code := "", trimmed
	if i := strings.LastIndexByte(trimmed, '\n'); i >= 0 {
		body, code = trimmed[:i], trimmed[i+1:]
	}
	if code != "202" {
		return nil, fmt.Errorf("gateway answered %s: %s", code, strings.TrimSpace(body))
	}
	var acc api.Accepted
	if err := json.Unmarshal([]byte(body), &acc); err != nil {
		return nil, fmt.Errorf("decoding the gateway's answer %q: %w", body, err)
	}
	r := &result{wall: d, bytes: n, rss0: m0.RSS, hwm: m1.HWM, sampled: sampled, samples: samples}
	r.status, err = e.cancelAndWait(ctx, acc.ID)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// cancelAndWait cancels the accepted build and waits until it is final,
// which is after its workspace is removed.
func (e *env) cancelAndWait(ctx context.Context, id string) (api.Status, error) {
	call := func(method, p string) (*api.Build, error) {
		req, err := http.NewRequestWithContext(ctx, method, e.gw.URL+p, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusConflict {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return nil, fmt.Errorf("%s %s: %s: %s", method, p, resp.Status, b)
		}
		var b api.Build
		json.NewDecoder(resp.Body).Decode(&b)
		return &b, nil
	}
	if _, err := call(http.MethodPost, "/v1/builds/"+id+"/cancel"); err != nil {
		return "", err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		b, err := call(http.MethodGet, "/v1/builds/"+id)
		if err != nil {
			return "", err
		}
		if b.Status.Final() {
			return b.Status, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("build %s still %s after 5 minutes", id, b.Status)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *env) bench(ctx context.Context) error {
	c := e.c
	var sinks, gws []*result
	for i := 0; i < c.runs; i++ {
		order := []string{"sink", "gateway"}
		if i%2 == 1 {
			order = []string{"gateway", "sink"}
		}
		for _, which := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Start every upload with clean page cache state: no dirty pages
			// of the previous run still being written back.
			syscall.Sync()
			if which == "sink" {
				r, err := e.sinkRun(ctx)
				if err != nil {
					return fmt.Errorf("run %d, sink: %w", i+1, err)
				}
				sinks = append(sinks, r)
				bu.Log.Printf("run %d sink: %s s, %.0f MiB/s", i+1, bu.Secs(r.wall), r.mibps())
			} else {
				r, err := e.gatewayRun(ctx, i)
				if err != nil {
					return fmt.Errorf("run %d, gateway: %w", i+1, err)
				}
				gws = append(gws, r)
				bu.Log.Printf("run %d gateway: %s s, %.0f MiB/s, VmRSS before %s MiB, VmHWM %s MiB, sampled max %s MiB (%d samples), build %s",
					i+1, bu.Secs(r.wall), r.mibps(), bu.MiB(r.rss0), bu.MiB(r.hwm), bu.MiB(r.sampled), r.samples, r.status)
			}
		}
	}
	e.print(sinks, gws)
	return nil
}

func (e *env) print(sinks, gws []*result) {
	c := e.c
	fmt.Printf("## bench/upload: 1 GiB context, curl to a sink vs. to the gateway\n\n")
	fmt.Printf("Context: plain tar, %d files × %s MiB of pseudo-random bytes + Dockerfile (%s MiB of tar); %d runs each, order alternating. "+
		"The gateway run ends when curl has the 202, i.e. after the whole context is extracted. Load average at the end: %s.\n\n",
		c.files, bu.MiB(c.fileSize), bu.MiB(sinks[0].bytes), c.runs, bu.LoadAvg())
	fmt.Println("| run | sink s | sink MiB/s | gateway s | gateway MiB/s | gateway VmRSS before MiB | VmHWM − VmRSS before MiB | sampled max VmRSS − before MiB |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	var st, gt []time.Duration
	var growth, sgrowth []int64
	for i := range sinks {
		s, g := sinks[i], gws[i]
		st, gt = append(st, s.wall), append(gt, g.wall)
		growth, sgrowth = append(growth, g.hwm-g.rss0), append(sgrowth, g.sampled-g.rss0)
		fmt.Printf("| %d | %s | %.0f | %s | %.0f | %s | %s | %s |\n", i+1, bu.Secs(s.wall), s.mibps(), bu.Secs(g.wall), g.mibps(),
			bu.MiB(g.rss0), bu.MiB(g.hwm-g.rss0), bu.MiB(g.sampled-g.rss0))
	}
	ms, mg := bu.Median(st), bu.Median(gt)
	sTput := float64(sinks[0].bytes) / (1 << 20) / ms.Seconds()
	gTput := float64(gws[0].bytes) / (1 << 20) / mg.Seconds()
	ratio := gTput / sTput
	maxGrowth := max(bu.MaxInt(growth), bu.MaxInt(sgrowth))
	verdict := func(ok bool) string {
		if ok {
			return "**PASS**"
		}
		return "**FAIL**"
	}
	fmt.Println()
	fmt.Println("| metric | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| median sink | %s s, %.0f MiB/s |\n", bu.Secs(ms), sTput)
	fmt.Printf("| median gateway | %s s, %.0f MiB/s |\n", bu.Secs(mg), gTput)
	fmt.Printf("| gateway / sink throughput | %.0f%% |\n", 100*ratio)
	fmt.Printf("| target: gateway ≥ 50%% of sink | %s |\n", verdict(ratio >= 0.5))
	fmt.Printf("| gateway RSS growth, max over runs (VmHWM or sampled) | %s MiB |\n", bu.MiB(maxGrowth))
	fmt.Printf("| target: RSS growth < 64 MiB | %s |\n", verdict(maxGrowth < 64<<20))
}

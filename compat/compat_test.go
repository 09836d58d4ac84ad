package compat

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/buildcontext"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testbuildkit"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
)

// The columns of the table: every builder compared against BuildKit, and
// kaniko with its layer cache against kaniko without.
const (
	colDocker      = "docker"       // Docker 20.10's legacy builder
	colKanikoCache = "kaniko-cache" // buildgw's kaniko runner, layer cache on
	colKaniko      = "kaniko"       // buildgw's kaniko runner, layer cache off
	colDind        = "dind"         // buildgw's dind runner
	colCache       = "cache-vs-nocache"
)

var builders = []string{colDocker, colKanikoCache, colKaniko, colDind}
var columns = append(slices.Clone(builders), colCache)

// How many builds of each kind run at once. The gateways' concurrency
// matches theirs.
const (
	parallelBuildKit = 2
	parallelDocker   = 2
	parallelGateway  = 2 // per gateway column
)

// casesEnv selects cases by a regular expression on their names, to try
// one case while working on it. Default: all.
const casesEnv = "BUILDGW_COMPAT_CASES"

// buildersEnv selects the compared columns by a regular expression on
// their names (docker, kaniko-cache, kaniko, dind, cache-vs-nocache), to
// work on one builder. BuildKit, the reference, always runs. Default: all.
const buildersEnv = "BUILDGW_COMPAT_BUILDERS"

// dockerdEnv, dockerEnv and buildxEnv name the dockerd, docker CLI and
// buildx of the dind column's gateway (runners.dind.dockerd, .docker and
// .buildx), to compare another Docker with the corpus: Debian's docker.io
// with BUILDGW_COMPAT_DOCKERD=/usr/sbin/dockerd, say (the docker CLI
// beside it builds unless buildxEnv is set). Default: dockerd v28 and
// buildx as scripts/setup --test builds them (testenv.DockerEngine).
const (
	dockerdEnv = "BUILDGW_COMPAT_DOCKERD"
	dockerEnv  = "BUILDGW_COMPAT_DOCKER"
	buildxEnv  = "BUILDGW_COMPAT_BUILDX"
)

// warmArg is the build arg of the build that fills kaniko's layer cache.
const warmArg = "BUILDGW_COMPAT_WARM"

// outcome is one build of one case.
type outcome struct {
	img  v1.Image
	err  error
	log  string
	took time.Duration
}

// TestCorpus builds every case of testdata/corpus with BuildKit (the
// reference) and the other builders, and fails on any difference that
// known.yaml does not list, and on any it lists that no longer occurs.
func TestCorpus(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestCorpus runs as root: it starts dockerd, buildkitd and rootless sandboxes")
	}
	testenv.RequireSandbox(t)
	cases, err := LoadCases(filepath.Join("testdata", "corpus"))
	if err != nil {
		t.Fatal(err)
	}
	known, err := LoadKnown("known.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range known {
		if !slices.ContainsFunc(cases, func(c Case) bool { return c.Name == k.Case }) {
			t.Errorf("known.yaml: case %s is not in the corpus", k.Case)
		}
	}
	if sel := os.Getenv(casesEnv); sel != "" {
		re, err := regexp.Compile(sel)
		if err != nil {
			t.Fatalf("%s: %v", casesEnv, err)
		}
		cases = slices.DeleteFunc(cases, func(c Case) bool { return !re.MatchString(c.Name) })
	}
	cols := slices.Clone(columns)
	if sel := os.Getenv(buildersEnv); sel != "" {
		re, err := regexp.Compile(sel)
		if err != nil {
			t.Fatalf("%s: %v", buildersEnv, err)
		}
		cols = slices.DeleteFunc(cols, func(c string) bool { return !re.MatchString(c) })
		if slices.Contains(cols, colCache) {
			cols = append(cols, colKanikoCache, colKaniko)
			slices.Sort(cols)
			cols = slices.Compact(cols)
		}
	}
	baseCases, err := LoadCases(filepath.Join("testdata", "bases"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	reg := testenv.Registry(t)
	refs := map[string]string{"busybox": testenv.Busybox(t, reg)}
	if usesDebian(t, append(slices.Clone(cases), baseCases...)) {
		t0 := time.Now()
		refs["debian"] = pushMinbase(t, reg)
		t.Logf("debian minbase ready in %s", time.Since(t0).Round(time.Millisecond))
	}

	var bk *testbuildkit.Daemon
	var sock string
	var gwCache, gwNoCache *client.Client
	var wg sync.WaitGroup
	if slices.Contains(cols, colDocker) {
		wg.Add(1)
		go func() { defer wg.Done(); sock = startDockerd(t) }()
	}
	bk = testbuildkit.Start(t)
	if slices.Contains(cols, colKanikoCache) || slices.Contains(cols, colDind) {
		gwCache = startGateway(t, reg, false)
	}
	if slices.Contains(cols, colKaniko) {
		gwNoCache = startGateway(t, reg, true)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("builders ready in %s", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(60*time.Minute))
	defer cancel()
	buildTimeout := testenv.Scale(10 * time.Minute)
	work := t.TempDir()

	// Bases first, by the reference builder, since cases name them.
	for _, b := range baseCases {
		dir := filepath.Join(work, "bases", b.Name)
		if err := b.Prepare(dir, refs); err != nil {
			t.Fatal(err)
		}
		ref := reg + "/bases/" + b.Name + ":1"
		bctx, bcancel := context.WithTimeout(ctx, buildTimeout)
		out, err := bk.Build(bctx, testbuildkit.Build{Context: dir, Args: b.Args, Target: b.Target, Push: ref})
		bcancel()
		if err != nil {
			t.Fatalf("building base %s with BuildKit: %v\n%s", b.Name, err, tail(string(out), 30))
		}
		refs["base:"+b.Name] = ref
	}
	t.Logf("bases built in %s", time.Since(start).Round(time.Millisecond))

	sems := map[string]chan struct{}{
		"buildkit":     make(chan struct{}, parallelBuildKit),
		colDocker:      make(chan struct{}, parallelDocker),
		colKanikoCache: make(chan struct{}, parallelGateway),
		colKaniko:      make(chan struct{}, parallelGateway),
		colDind:        make(chan struct{}, parallelGateway),
	}
	var dockerAlone sync.RWMutex
	run := map[string]func(ctx context.Context, c Case, dir, ref string) outcome{
		"buildkit": func(ctx context.Context, c Case, dir, ref string) outcome {
			out, err := bk.Build(ctx, testbuildkit.Build{Context: dir, Args: c.Args, Target: c.Target, Push: ref})
			return pulled(ref, string(out), err)
		},
		colDocker: func(ctx context.Context, c Case, dir, ref string) outcome {
			dockerAlone.RLock()
			o := dockerBuild(ctx, sock, c, dir, ref)
			dockerAlone.RUnlock()
			if o.err == nil || c.ExpectError || ctx.Err() != nil {
				return o
			}
			// Docker 20.10's legacy builder, with two builds at once in
			// one daemon on a loaded machine, now and then loses a
			// layer's mount in the middle of a COPY ("source path not
			// found", "Error processing tar file") or commits an ADD
			// layer without its file: a failed build is tried once more
			// with the daemon to itself and without its cache (which
			// may hold the bad layer), and that try counts.
			dockerAlone.Lock()
			defer dockerAlone.Unlock()
			again := dockerBuild(ctx, sock, c, dir, ref, "--no-cache")
			t.Logf("%s: docker build failed (%v); alone it %s", c.Name, o.err, map[bool]string{true: "built", false: "failed again"}[again.err == nil])
			return again
		},
		colKanikoCache: func(ctx context.Context, c Case, dir, ref string) outcome {
			// A first build fills the layer cache, so that the compared
			// one takes its layers from it. Its extra build arg, declared
			// nowhere, keeps the result cache from answering the second
			// build whole while leaving the layers' cache keys alone.
			warm := c
			warm.Args = map[string]string{warmArg: "1"}
			for k, v := range c.Args {
				warm.Args[k] = v
			}
			if o := gatewayBuild(ctx, gwCache, "kaniko", warm, dir, ref+"-warm"); o.err != nil && !c.ExpectError {
				t.Logf("%s: the cache-filling build failed: %v", c.Name, o.err)
			}
			return gatewayBuild(ctx, gwCache, "kaniko", c, dir, ref)
		},
		colKaniko: func(ctx context.Context, c Case, dir, ref string) outcome {
			return gatewayBuild(ctx, gwNoCache, "kaniko", c, dir, ref)
		},
		colDind: func(ctx context.Context, c Case, dir, ref string) outcome {
			return gatewayBuild(ctx, gwCache, "dind", c, dir, ref)
		},
	}

	for kind := range run {
		if kind != "buildkit" && !slices.Contains(cols, kind) {
			delete(run, kind)
		}
	}

	results := make([]map[string]outcome, len(cases))
	for i, c := range cases {
		dir := filepath.Join(work, "cases", c.Name)
		if err := c.Prepare(dir, refs); err != nil {
			t.Fatal(err)
		}
		results[i] = map[string]outcome{}
		var mu sync.Mutex
		for kind, f := range run {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sems[kind] <- struct{}{}
				defer func() { <-sems[kind] }()
				bctx, bcancel := context.WithTimeout(ctx, buildTimeout)
				defer bcancel()
				t0 := time.Now()
				o := f(bctx, c, dir, reg+"/"+kind+"/"+c.Name+":1")
				o.took = time.Since(t0)
				mu.Lock()
				results[i][kind] = o
				done := len(results[i]) == len(run)
				mu.Unlock()
				if done {
					t.Logf("%s built by all at %s", c.Name, time.Since(start).Round(time.Second))
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("%d cases built in %s", len(cases), time.Since(start).Round(time.Millisecond))
	var busy strings.Builder
	for _, kind := range append([]string{"buildkit"}, builders...) {
		var sum, longest time.Duration
		for i := range cases {
			sum += results[i][kind].took
			longest = max(longest, results[i][kind].took)
		}
		fmt.Fprintf(&busy, " %s %s (longest %s);", kind, sum.Round(time.Second), longest.Round(time.Second))
	}
	t.Logf("build time summed per builder:%s", strings.TrimSuffix(busy.String(), ";"))

	rep := report(t, cases, results, known, cols)
	t.Logf("\n%s", rep)
}

// cell is one case × column verdict.
type cell struct {
	mark  string // "=", "≠", "✗", "K" (known upstream), "B" (buildgw's own, open); "-" or "built" when the reference failed
	diffs []string
}

// report compares the selected columns (cols) and leaves the others out.
func report(t *testing.T, cases []Case, results []map[string]outcome, known []Known, cols []string) string {
	isKnown := map[[2]string]Known{}
	for _, k := range known {
		isKnown[[2]string{k.Case, k.Builder}] = k
	}
	for _, k := range known {
		if !slices.Contains(columns, k.Builder) {
			t.Errorf("known.yaml: %s: builder %q is none of %q", k.Case, k.Builder, columns)
		}
	}

	var rows strings.Builder
	var details strings.Builder
	fmt.Fprintf(&rows, "%-40s %-8s", "case", "buildkit")
	for _, col := range columns {
		fmt.Fprintf(&rows, " %-16s", col)
	}
	rows.WriteString("\n")
	same := map[string]int{}
	reference := 0
	for i, c := range cases {
		res := results[i]
		ref := res["buildkit"]
		refMark := "ok"
		switch {
		case c.ExpectError && ref.err == nil:
			refMark = "≠"
			t.Errorf("%s: BuildKit built it, want an error", c.Name)
		case c.ExpectError:
			refMark = "✗ (want)"
		case ref.err != nil:
			refMark = "✗"
			t.Errorf("%s: the reference build failed: %v\n%s", c.Name, ref.err, tail(ref.log, 30))
		default:
			reference++
		}
		fmt.Fprintf(&rows, "%-40s %-8s", c.Name, refMark)
		for _, col := range columns {
			var cl cell
			switch {
			case !slices.Contains(cols, col):
				fmt.Fprintf(&rows, " %-16s", "skipped")
				continue
			case col == colCache:
				cl = compareOutcomes(c, res[colKanikoCache], res[colKaniko])
			case c.ExpectError:
				cl = cell{mark: "="}
				if res[col].err == nil {
					cl = cell{mark: "≠", diffs: []string{"built, want an error"}}
				}
			case ref.err != nil:
				// Nothing to compare with: say whether it built.
				cl = cell{mark: "-"}
				if res[col].err == nil {
					cl = cell{mark: "built"}
				} else if col != colCache {
					fmt.Fprintf(&details, "%s × %s failed too: %v: %s\n", c.Name, col, res[col].err, tail(res[col].log, 1))
				}
			default:
				cl = compareOutcomes(c, ref, res[col])
			}
			k, listed := isKnown[[2]string{c.Name, col}]
			switch {
			case listed && (cl.mark == "≠" || cl.mark == "✗"):
				fmt.Fprintf(&details, "%s × %s (known: %s %s): %s\n", c.Name, col, k.Reason, k.Upstream, strings.Join(first(cl.diffs, 8), "; "))
				cl.mark = "K"
				if k.Ours() {
					cl.mark = "B"
				}
			case listed && cl.mark == "=":
				t.Errorf("%s × %s: listed in known.yaml (%s) but now the same: remove the entry", c.Name, col, k.Reason)
			case cl.mark == "≠" || cl.mark == "✗":
				t.Errorf("%s × %s differs from %s:\n  %s", c.Name, col, map[bool]string{true: colKanikoCache, false: "buildkit"}[col == colCache], strings.Join(first(cl.diffs, 20), "\n  "))
			}
			if cl.mark == "=" && !c.ExpectError && ref.err == nil {
				same[col]++
			}
			fmt.Fprintf(&rows, " %-16s", cl.mark)
		}
		rows.WriteString("\n")
	}
	fmt.Fprintf(&rows, "%-40s %-8s", fmt.Sprintf("same as reference (%d cases)", reference), "")
	for _, col := range columns {
		if !slices.Contains(cols, col) {
			fmt.Fprintf(&rows, " %-16s", "")
			continue
		}
		pct := 0.0
		if reference > 0 {
			pct = 100 * float64(same[col]) / float64(reference)
		}
		fmt.Fprintf(&rows, " %-16s", fmt.Sprintf("%d%%", int(pct+0.5)))
	}
	rows.WriteString("\n")
	if details.Len() > 0 {
		rows.WriteString("\nknown differences, and failures where the reference failed:\n" + details.String())
	}
	return rows.String()
}

// compareOutcomes compares b with the reference a.
func compareOutcomes(c Case, a, b outcome) cell {
	switch {
	case a.err != nil && b.err != nil:
		return cell{mark: "="}
	case a.err != nil:
		return cell{mark: "≠", diffs: []string{"the reference failed, this built"}}
	case b.err != nil:
		return cell{mark: "✗", diffs: []string{fmt.Sprintf("build failed: %v\n%s", b.err, tail(b.log, 15))}}
	}
	ds, err := Compare(a.img, b.img)
	if err != nil {
		return cell{mark: "✗", diffs: []string{"comparing: " + err.Error()}}
	}
	if len(ds) == 0 {
		return cell{mark: "="}
	}
	var s []string
	for _, d := range ds {
		s = append(s, d.String())
	}
	return cell{mark: "≠", diffs: s}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}

// pulled finishes a build that pushed ref: the image as the registry
// has it.
func pulled(ref, log string, err error) outcome {
	if err != nil {
		return outcome{err: err, log: log}
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return outcome{err: err, log: log}
	}
	img, err := remote.Image(r)
	if err != nil {
		return outcome{err: fmt.Errorf("pulling %s: %w", ref, err), log: log}
	}
	return outcome{img: img, log: log}
}

// dockerBuild builds with the legacy builder of the private daemon at
// sock and pushes ref.
func dockerBuild(ctx context.Context, sock string, c Case, dir, ref string, flags ...string) outcome {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return outcome{err: err}
	}
	args := append([]string{"--host", "unix://" + sock, "build", "--network=none", "--tag", ref}, flags...)
	for _, k := range slices.Sorted(mapsKeys(c.Args)) {
		args = append(args, "--build-arg", k+"="+c.Args[k])
	}
	if c.Target != "" {
		args = append(args, "--target", c.Target)
	}
	cmd := exec.CommandContext(ctx, docker, append(args, dir)...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return outcome{err: fmt.Errorf("docker build: %w", err), log: string(out)}
	}
	push, err := exec.CommandContext(ctx, docker, "--host", "unix://"+sock, "push", ref).CombinedOutput()
	if err != nil {
		return outcome{err: fmt.Errorf("docker push: %w", err), log: string(out) + string(push)}
	}
	return pulled(ref, string(out), nil)
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// gatewayBuild submits the case to a gateway with the runner named and
// waits for it.
func gatewayBuild(ctx context.Context, cl *client.Client, runner string, c Case, dir, ref string) outcome {
	spec := api.BuildSpec{Destinations: []string{ref}, BuildArgs: c.Args, Target: c.Target, Runner: runner}
	acc, err := cl.Submit(ctx, spec, func() io.ReadCloser { return buildcontext.Reader(ctx, dir) }, nil)
	if err != nil {
		return outcome{err: fmt.Errorf("submitting: %w", err)}
	}
	var log bytes.Buffer
	if err := cl.Logs(ctx, acc.ID, true, &log); err != nil {
		return outcome{err: fmt.Errorf("following the log: %w", err), log: log.String()}
	}
	b, err := cl.Get(ctx, acc.ID)
	for err == nil && !b.Status.Final() {
		// The log ends just before the final state is stored.
		select {
		case <-ctx.Done():
			return outcome{err: ctx.Err(), log: log.String()}
		case <-time.After(100 * time.Millisecond):
		}
		b, err = cl.Get(ctx, acc.ID)
	}
	if err != nil {
		return outcome{err: fmt.Errorf("getting the build: %w", err), log: log.String()}
	}
	if b.Status != api.StatusSucceeded {
		return outcome{err: fmt.Errorf("build %s: %s", b.Status, b.Error), log: log.String()}
	}
	return pulled(ref+"@"+b.Digest, log.String(), nil)
}

// startGateway starts a gateway with both runners that pushes to and
// pulls from reg, with kaniko's layer cache on or off.
func startGateway(t *testing.T, reg string, noCache bool) *client.Client {
	cfg := gateway.DefaultConfig()
	cfg.Concurrency = 2 * parallelGateway
	cfg.Registries = map[string]gateway.Registry{reg: {Insecure: true}}
	cfg.Runners.Kaniko.Executor = testenv.Executor(t)
	cfg.Runners.Kaniko.DisableLayerCache = noCache
	if d := os.Getenv(dockerdEnv); d != "" {
		cfg.Runners.Dind.Dockerd = d
		cfg.Runners.Dind.Docker = os.Getenv(dockerEnv)
		cfg.Runners.Dind.Buildx = os.Getenv(buildxEnv)
	} else {
		cfg.Runners.Dind.Dockerd, cfg.Runners.Dind.Buildx = testenv.DockerEngine(t)
	}
	g := testgateway.Start(t, cfg, testgateway.WithPolicy(testgateway.Policy{Rules: []testgateway.Rule{{
		Name:  "compat",
		Match: map[string]string{"kind": "token"},
		Allow: testgateway.Allow{Destinations: []string{reg + "/**"}, From: []string{reg}, Runners: []string{"kaniko", "dind"}},
	}}}))
	cl, err := client.New(g.URL, g.Token)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// startDockerd runs a private dockerd (its own data root, exec root and
// socket; no bridge, no firewall changes) until the test ends and returns
// its socket.
func startDockerd(t *testing.T) string {
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		t.Error("dockerd not found: run scripts/setup --test (it installs docker.io)")
		return ""
	}
	// A unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "compat-dockerd-")
	if err != nil {
		t.Error(err)
		return ""
	}
	sock := filepath.Join(dir, "docker.sock")
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Error(err)
		return ""
	}
	cmd := exec.Command(dockerd,
		"--data-root="+filepath.Join(dir, "data"), "--exec-root="+filepath.Join(dir, "exec"),
		"--pidfile="+filepath.Join(dir, "docker.pid"), "--host=unix://"+sock,
		"--config-file="+writeDaemonJSON(t, dir),
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
		"--userland-proxy=false", "--exec-opt=native.cgroupdriver=cgroupfs",
		"--cgroup-parent="+filepath.Base(dir))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Errorf("starting dockerd: %v", err)
		return ""
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(testenv.Scale(30 * time.Second)):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		exec.Command("umount", "-R", "-l", filepath.Join(dir, "data")).Run()
		exec.Command("umount", "-R", "-l", filepath.Join(dir, "exec")).Run()
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(testenv.Scale(60 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(10*time.Second))
		out, err := exec.CommandContext(ctx, "docker", "--host", "unix://"+sock, "version", "--format", "{{.Server.Version}}").CombinedOutput()
		cancel()
		if err == nil {
			return sock
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Errorf("dockerd exited:\n%s", tail(string(b), 30))
			return ""
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Errorf("dockerd did not answer: %s\n%s", out, tail(string(b), 30))
			return ""
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeDaemonJSON writes an empty daemon.json: without --config-file,
// dockerd would read the host's /etc/docker/daemon.json.
func writeDaemonJSON(t *testing.T, dir string) string {
	p := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(p, []byte("{}\n"), 0o600); err != nil {
		t.Error(err)
	}
	return p
}

func usesDebian(t *testing.T, cs []Case) bool {
	for _, c := range cs {
		b, err := os.ReadFile(filepath.Join(c.Dir, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(Placeholders(string(b)), "debian") {
			return true
		}
	}
	return false
}

// pushMinbase pushes a Debian minbase (debootstrap, cached by testenv) to
// reg.
func pushMinbase(t *testing.T, reg string) string {
	img, err := baseimage.FromDir(testenv.Minbase(t), []string{"bash"})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(reg+"/library/debian:bookworm-minbase", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing the minbase: %v", err)
	}
	return ref.String()
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

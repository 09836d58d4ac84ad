// Command replicas measures what building across replicated gateways
// with the kubernetes runner costs against one gateway with the local
// kaniko runner: -builds (20) small, different reference projects
// submitted at once by as many `buildctl-lite submit` clients, in two
// cases interleaved over -n rounds:
//
//   - (a) one gateway, the kaniko runner, concurrency -c;
//   - (b) two gateways on one PostgreSQL (store.postgres_dsn_file), each
//     with the kubernetes runner on the one-node cluster of
//     scripts/cluster and concurrency -c/2, the clients alternating
//     between them.
//
// It reports the wall time from the first submit to the last digest, the
// per-build latency, the time from a build's start to kaniko's
// first log line, and for (b) where that time goes around the Pod's
// start (Pod created, container running, first line), each gateway's
// peak RSS and which replica ran how many builds. Every pushed image is
// pulled back and checked file by file.
//
//	go run ./bench/replicas -n 3
//
// Run as root from the repository root with bin/ built. The cluster is
// $BUILDGW_KUBECONFIG's, else scripts/cluster up (and down at the end if
// this program started it). See bench/README.md.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/baseimage"
	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/bench/internal/refproject"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testcluster"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/internal/testpg"
	k8srunner "github.com/buildgw/buildgw/runners/kubernetes"
)

type config struct {
	n, builds, conc, replicaConc int
	files, genFiles              int
	bytes                        int64
	seed                         uint64
	bin, busybox, work, cases    string
	keep, verbose                bool
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 3, "interleaved rounds")
	flag.IntVar(&c.builds, "builds", 20, "builds per case, submitted at once, each of its own project")
	flag.IntVar(&c.conc, "c", 2, "(a)'s concurrency: build slots in all")
	flag.IntVar(&c.replicaConc, "replica-c", 0, "(b)'s concurrency per replica (0: -c/2, so that both cases have -c slots)")
	flag.IntVar(&c.files, "files", 40, "files per project")
	flag.Int64Var(&c.bytes, "bytes", 300<<10, "bytes per project")
	flag.IntVar(&c.genFiles, "gen-files", 50, "files each project's RUN writes")
	flag.Uint64Var(&c.seed, "seed", 1, "project generator seed")
	flag.StringVar(&c.bin, "bin", "bin", "directory of buildgw, buildctl-lite and kaniko-executor")
	flag.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox for the base image")
	flag.StringVar(&c.work, "work", "", "parent of the temporary directory (default $TMPDIR)")
	flag.StringVar(&c.cases, "cases", "a,b", "cases to run: a (no cluster needed), b, or both")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs, projects)")
	flag.BoolVar(&c.verbose, "v", false, "gateway logs to stderr")
	flag.Parse()
	if c.replicaConc == 0 {
		c.replicaConc = max(1, c.conc/2)
	}
	if c.n < 1 || c.builds < 1 || c.conc < 1 || c.replicaConc < 1 || c.files < 10 {
		fmt.Fprintln(os.Stderr, "replicas: -n, -builds, -c and -replica-c must be >= 1, -files >= 10")
		os.Exit(2)
	}
	for _, k := range strings.Split(c.cases, ",") {
		if k != caseLocal && k != caseReplicas {
			fmt.Fprintf(os.Stderr, "replicas: unknown case %q in -cases (known: a,b)\n", k)
			os.Exit(2)
		}
	}
	bu.Main("replicas", func(ctx context.Context) error { return run(ctx, &c) })
}

// Cases, in the order the table lists them.
const (
	caseLocal    = "a"
	caseReplicas = "b"
)

// build is one client's submission and what became of it.
type build struct {
	project    int
	url, ref   string
	start, end time.Time
	// firstLine and lastLine are when kaniko's first and last log lines
	// reached the client; pushing when the gateway's "#buildgw pushing"
	// line did.
	firstLine, lastLine, pushing time.Time
	id                           string
	digest                       string    // the last line of the client's stdout
	started                      time.Time // the build's started_at
	finished                     time.Time // the build's finished_at
	pod                          *podTimes // (b): the build's (last) Pod
	pods                         int       // (b): Pods made for the build
}

// sample is one case of one round.
type sample struct {
	wall   time.Duration
	builds []*build
	rss    []int64 // peak RSS of each gateway process, in the case's order
}

type env struct {
	c          *config
	cases      []string
	tmp, root  string
	host, base string
	tok        string
	ctl        string
	projects   []*refproject.Project
	local      *testgateway.Gateway
	replicas   []*testgateway.Gateway
	instances  []string
	pods       *podRecorder
	edits      int
	res        map[string][]sample
}

func run(ctx context.Context, c *config) (err error) {
	e := &env{c: c, cases: strings.Split(c.cases, ","), res: map[string][]sample{}}
	if e.root, err = bu.ModuleRoot(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root, like a production gateway (the kaniko runner's sandboxes, the cluster)")
	}
	if e.tmp, err = os.MkdirTemp(c.work, "buildgw-bench-replicas-"); err != nil {
		return err
	}
	// Config paths must be absolute (store.postgres_dsn_file).
	if e.tmp, err = filepath.Abs(e.tmp); err != nil {
		return err
	}
	os.Chmod(e.tmp, 0o711)
	var stops []func()
	defer func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
		if c.keep {
			bu.Log.Printf("kept %s", e.tmp)
			return
		}
		if err := os.RemoveAll(e.tmp); err != nil {
			bu.Log.Printf("removing %s: %v", e.tmp, err)
		}
	}()
	for _, d := range []string{"logs", "blobs", "home"} {
		if err := os.Mkdir(filepath.Join(e.tmp, d), 0o700); err != nil {
			return err
		}
	}
	bin, err := filepath.Abs(c.bin)
	if err != nil {
		return err
	}
	e.ctl = filepath.Join(bin, "buildctl-lite")

	// One registry: the base image, and every push of both cases.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(registry.NewDiskBlobHandler(filepath.Join(e.tmp, "blobs")))))
	stops = append(stops, srv.Close)
	e.host = srv.Listener.Addr().String()
	img, err := baseimage.Busybox(c.busybox)
	if err != nil {
		return err
	}
	e.base = e.host + "/library/busybox:latest"
	ref, _ := name.ParseReference(e.base)
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("pushing the base image: %w", err)
	}

	bu.Log.Printf("generating %d projects (%d files, %s KiB each)", c.builds, c.files, fmt.Sprint(c.bytes>>10))
	for i := range c.builds {
		p, err := refproject.Generate(filepath.Join(e.tmp, fmt.Sprintf("project-%02d", i)), c.files, c.bytes, c.seed+uint64(i), c.genFiles)
		if err != nil {
			return err
		}
		e.projects = append(e.projects, p)
	}

	// Gateways: one with the kaniko runner, two replicas with the
	// kubernetes runner. One token for all, as one CI identity.
	var b [24]byte
	rand.Read(b[:])
	e.tok = "bench-" + hex.EncodeToString(b[:])
	stopGW := func(g *testgateway.Gateway) func() {
		return func() {
			if err := g.Stop(); err != nil {
				bu.Log.Printf("gateway: %v", err)
			}
		}
	}
	if slices.Contains(e.cases, caseLocal) {
		if e.local, err = e.startGateway(ctx, bin, "local", func(cfg *gateway.Config) { cfg.Concurrency = c.conc }); err != nil {
			return err
		}
		stops = append(stops, stopGW(e.local))
	}
	if slices.Contains(e.cases, caseReplicas) {
		if err := e.setupReplicas(ctx, bin, &stops, stopGW); err != nil {
			return err
		}
	}

	for i := range c.n {
		// Each case leads in turn.
		order := slices.Clone(e.cases)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, k := range order {
			if err := e.runCase(ctx, k, i); err != nil {
				return fmt.Errorf("round %d, case (%s): %w", i+1, k, err)
			}
		}
		if i+1 < c.n {
			// For a run cut short: what the rounds so far measured.
			e.print(os.Stderr, i+1)
		}
	}
	e.print(os.Stdout, c.n)
	return nil
}

// setupReplicas starts what case (b) needs: the cluster (its stop
// added to stops only if it was started here), the executor image in its
// containerd, the seccomp profile on its kubelet, a namespace, a link from
// the host by which Pods reach the data servers, a watch of the Pods,
// PostgreSQL, and the two replicas.
func (e *env) setupReplicas(ctx context.Context, bin string, stops *[]func(), stopGW func(*testgateway.Gateway) func()) error {
	c := e.c
	push := func(f func()) { *stops = append(*stops, f) }
	bu.Log.Printf("cluster: $%s or scripts/cluster up", testcluster.KubeconfigEnv)
	cl, started, err := testcluster.Up(ctx, e.root)
	if err != nil {
		return err
	}
	if started {
		push(func() {
			bu.Log.Printf("scripts/cluster down (this program started the cluster)")
			if err := testcluster.Down(e.root); err != nil {
				bu.Log.Print(err)
			}
		})
	}
	imageRef, err := e.executorImage(cl, filepath.Join(bin, "kaniko-executor"))
	if err != nil {
		return err
	}
	profile, err := k8srunner.SeccompProfile()
	if err != nil {
		return err
	}
	if err := cl.InstallProfile(k8srunner.SeccompProfileName, profile); err != nil {
		return err
	}
	kc, err := k8sClient(cl.Kubeconfig)
	if err != nil {
		return err
	}
	ns, delNS, err := namespace(ctx, kc)
	if err != nil {
		return err
	}
	push(delNS)
	hostIP, unlink, err := cl.Link()
	if err != nil {
		return err
	}
	push(func() {
		if err := unlink(); err != nil {
			bu.Log.Print(err)
		}
	})
	e.pods, err = watchPods(kc, ns)
	if err != nil {
		return err
	}
	push(e.pods.stop)

	pg, err := testpg.Launch()
	if err != nil {
		return err
	}
	push(func() {
		if err := pg.Stop(); err != nil {
			bu.Log.Printf("postgres: %v", err)
		}
	})
	dsnFile := filepath.Join(e.tmp, "postgres.dsn")
	if err := os.WriteFile(dsnFile, []byte(pg.DSN+"\n"), 0o600); err != nil {
		return err
	}

	for i := range 2 {
		// The gateway adds the replica's random suffix to its instance.
		inst := fmt.Sprintf("bench-r%d", i+1)
		g, err := e.startGateway(ctx, bin, inst, func(cfg *gateway.Config) {
			cfg.Concurrency = c.replicaConc
			cfg.Store.PostgresDSNFile = dsnFile
			cfg.Runners.Kubernetes = gateway.KubernetesRunner{
				Enabled:         true,
				Kubeconfig:      cl.Kubeconfig,
				Namespace:       ns,
				Image:           imageRef,
				ImagePullPolicy: string(corev1.PullNever),
				DataListen:      net.JoinHostPort(hostIP, "0"),
				Instance:        inst,
			}
		})
		if err != nil {
			return err
		}
		push(stopGW(g))
		e.replicas = append(e.replicas, g)
		e.instances = append(e.instances, inst)
	}
	return nil
}

// executorImage builds the executor image from the executor at exe (as
// buildgw executor-image does), imports it into the cluster's containerd
// and returns its reference, named by its digest.
func (e *env) executorImage(cl *testcluster.Cluster, exe string) (string, error) {
	img, err := k8srunner.ExecutorImage(exe, "/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	ref := "buildgw.local/kaniko-executor:" + d.Hex[:16]
	tarPath := filepath.Join(e.tmp, "executor.tar")
	if err := k8srunner.WriteExecutorImage(tarPath, ref, img); err != nil {
		return "", err
	}
	defer os.Remove(tarPath)
	return ref, cl.Import(tarPath)
}

func k8sClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// namespace creates a namespace for the run's Pods and waits for its
// default ServiceAccount, without which Pods are refused.
func namespace(ctx context.Context, kc kubernetes.Interface) (string, func(), error) {
	var b [4]byte
	rand.Read(b[:])
	ns := "buildgw-bench-" + hex.EncodeToString(b[:])
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return "", nil, fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	del := func() {
		if err := kc.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			bu.Log.Printf("deleting namespace %s: %v", ns, err)
		}
	}
	for end := time.Now().Add(time.Minute); ; {
		if _, err := kc.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return ns, del, nil
		} else if time.Now().After(end) || ctx.Err() != nil {
			del()
			return "", nil, fmt.Errorf("namespace %s has no default ServiceAccount: %w", ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startGateway runs bin/buildgw (internal/testgateway, binary mode)
// allowing the kaniko and kubernetes runners, pushing to the shared
// registry, with the run's token; set adjusts its config.
func (e *env) startGateway(ctx context.Context, bin, name string, set func(*gateway.Config)) (*testgateway.Gateway, error) {
	lf, err := os.Create(filepath.Join(e.tmp, "logs", "gateway-"+name+".log"))
	if err != nil {
		return nil, err
	}
	var out io.Writer = lf
	if e.c.verbose {
		out = io.MultiWriter(lf, os.Stderr)
	}
	cfg := gateway.DefaultConfig()
	cfg.StateDir = filepath.Join(e.tmp, "gw-"+name, "state")
	if err := os.MkdirAll(filepath.Dir(cfg.StateDir), 0o711); err != nil {
		return nil, err
	}
	cfg.Runners.Kaniko.Executor = filepath.Join(bin, "kaniko-executor")
	// All the submissions of the one identity at once: none turned away.
	cfg.Queue.MaxUploadingPerIdentity = 0
	cfg.Registries = map[string]gateway.Registry{e.host: {Insecure: true}}
	cfg.Tokens = []gateway.Token{{Name: "bench", SHA256: token.HashToken(e.tok)}}
	set(&cfg)
	pol := testgateway.Policy{Rules: []testgateway.Rule{{Name: "bench", Match: map[string]string{"kind": "token"},
		Allow: testgateway.Allow{From: []string{e.host}, Destinations: []string{e.host + "/**"}, Runners: []string{"kaniko", "kubernetes"}}}}}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	g, err := testgateway.Launch(sctx, cfg, testgateway.WithBinary(filepath.Join(bin, "buildgw")), testgateway.WithOutput(out), testgateway.WithPolicy(pol))
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting gateway %s: %w", name, err)
	}
	bu.Log.Printf("gateway %s: pid %d at %s", name, g.Cmd.Process.Pid, g.URL)
	return g, nil
}

// runCase submits every project at once in case k of round r and
// checks every image.
func (e *env) runCase(ctx context.Context, k string, r int) error {
	// A context no build has seen: nothing after the base comes from a
	// cache (the kaniko runner's result and layer caches miss).
	for _, p := range e.projects {
		e.edits++
		if _, err := p.ChangeOne(e.edits); err != nil {
			return err
		}
	}
	gws := []*testgateway.Gateway{e.local}
	runner := "kaniko"
	if k == caseReplicas {
		gws, runner = e.replicas, "kubernetes"
	}
	var probes []func() int64
	for _, g := range gws {
		pid := g.Cmd.Process.Pid
		probes = append(probes, func() int64 { m, _ := bu.ReadMem(pid); return m.RSS })
	}
	builds := make([]*build, len(e.projects))
	for i := range e.projects {
		// The clients alternate between the replicas.
		builds[i] = &build{project: i, url: gws[i%len(gws)].URL, ref: fmt.Sprintf("%s/bench/%s-p%02d:%d", e.host, k, i, r+1)}
	}
	syscall.Sync()
	stop := bu.PeakSampler(100*time.Millisecond, probes...)
	t0 := time.Now()
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.submit(ctx, b, runner, filepath.Join(e.tmp, "logs", fmt.Sprintf("%s-%d-p%02d.log", k, r+1, i)))
		}()
	}
	wg.Wait()
	var last time.Time
	for _, b := range builds {
		if b.end.After(last) {
			last = b.end
		}
	}
	sm := sample{wall: last.Sub(t0), builds: builds, rss: stop()}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Not timed: each build's start, its Pods, its image.
	c, err := client.New(gws[0].URL, e.tok)
	if err != nil {
		return err
	}
	for _, b := range builds {
		st, err := c.Get(ctx, b.id)
		if err != nil {
			return fmt.Errorf("status of %s: %w", b.id, err)
		}
		if st.StartedAt == nil {
			return fmt.Errorf("build %s has no started_at", b.id)
		}
		b.started = *st.StartedAt
		if st.FinishedAt != nil {
			b.finished = *st.FinishedAt
		}
		if st.Digest == "" || st.Digest != b.digest {
			return fmt.Errorf("build %s: the client printed %q, the gateway says %s with digest %q", b.id, b.digest, st.Status, st.Digest)
		}
		if k == caseReplicas {
			b.pod, b.pods = e.pods.of(b.id)
			if b.pod == nil {
				return fmt.Errorf("build %s: no Pod seen", b.id)
			}
		}
		if err := refproject.Verify(ctx, b.ref, e.projects[b.project]); err != nil {
			return fmt.Errorf("image %s is INCORRECT: %w", b.ref, err)
		}
	}
	e.res[k] = append(e.res[k], sm)
	bu.Log.Printf("round %d case (%s): %d builds in %.2fs; every image checked", r+1, k, len(builds), sm.wall.Seconds())
	return nil
}

// submit runs buildctl-lite submit for b, its stderr (the build log) to
// logPath with each line's seconds since the submit, noting the build ID
// and when kaniko's first log line arrived.
func (e *env) submit(ctx context.Context, b *build, runner, logPath string) error {
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.CommandContext(ctx, e.ctl, "submit", "-t", b.ref, "--build-arg", "BASE="+e.base, "--runner", runner, e.projects[b.project].Dir)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(e.tmp, "home"), "BUILDGW_URL=" + b.url, "BUILDGW_TOKEN=" + e.tok}
	var stdout bytes.Buffer
	b.start = time.Now()
	lw := &lineWatch{b: b, w: &bu.StampWriter{W: lf, T0: b.start}}
	cmd.Stdout, cmd.Stderr = &stdout, lw
	err = cmd.Run()
	b.end = time.Now()
	lw.flush()
	if err != nil {
		return fmt.Errorf("buildctl-lite submit of project %d: %w\n%s", b.project, err, bu.Tail(logPath, 20))
	}
	if b.id == "" {
		return fmt.Errorf("project %d: no build ID in the client's output", b.project)
	}
	if out := strings.Fields(stdout.String()); len(out) > 0 {
		b.digest = out[len(out)-1]
	}
	if b.firstLine.IsZero() {
		return fmt.Errorf("build %s: no line of kaniko's in its log\n%s", b.id, bu.Tail(logPath, 20))
	}
	return nil
}

// lineWatch copies the client's stderr to w and notes, for its build,
// the ID ("build ID queued") and when kaniko's first log line arrived.
type lineWatch struct {
	b    *build
	w    io.Writer
	part []byte
}

func (l *lineWatch) Write(p []byte) (int, error) {
	now := time.Now()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.part[:i]), now)
		l.part = l.part[i+1:]
	}
	return l.w.Write(p)
}

func (l *lineWatch) flush() {
	if len(l.part) > 0 {
		l.line(string(l.part), time.Now())
	}
}

func (l *lineWatch) line(s string, at time.Time) {
	if l.b.id == "" {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(s, "build "), " queued"); ok && strings.HasPrefix(s, "build ") {
			l.b.id = id
		}
		return
	}
	// kaniko's lines are logrus text: time="..." level=... msg=...; the
	// gateway's own ("#buildgw", "base image ...", "buildgw: ...") are not.
	switch {
	case strings.HasPrefix(s, `time="`) && strings.Contains(s, " level="):
		if l.b.firstLine.IsZero() {
			l.b.firstLine = at
		}
		l.b.lastLine = at
	case strings.HasPrefix(s, "#buildgw pushing ") && l.b.pushing.IsZero():
		l.b.pushing = at
	}
}

// podTimes is what a watch saw of one build's Pod.
type podTimes struct {
	instance string
	// seen and running are when the watch told of the Pod's creation
	// and of its container running (or having run), on this host's
	// clock; created and startedAt are the Pod's own timestamps
	// (metadata.creationTimestamp, the container's state startedAt),
	// which the API gives in whole seconds.
	seen, running      time.Time
	created, startedAt time.Time
	// terminated and gone are when the watch told of the container's
	// end and of the Pod's deletion.
	terminated, gone time.Time
}

// podRecorder watches the namespace's Pods and keeps, per build ID
// (the runner's annotation), the times of each of its Pods.
type podRecorder struct {
	mu    sync.Mutex
	pods  map[string][]*podTimes // build ID -> its Pods, in order
	byUID map[string]*podTimes
	done  chan struct{}
}

func watchPods(kc kubernetes.Interface, ns string) (*podRecorder, error) {
	r := &podRecorder{pods: map[string][]*podTimes{}, byUID: map[string]*podTimes{}, done: make(chan struct{})}
	lw := cache.NewListWatchFromClient(kc.CoreV1().RESTClient(), "pods", ns, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.observe(obj, time.Now()) },
		UpdateFunc: func(_, obj any) { r.observe(obj, time.Now()) },
		DeleteFunc: func(obj any) {
			at := time.Now()
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				r.mu.Lock()
				if t := r.byUID[string(p.UID)]; t != nil && t.gone.IsZero() {
					t.gone = at
				}
				r.mu.Unlock()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	go inf.Run(r.done)
	end := time.Now().Add(time.Minute)
	for !inf.HasSynced() {
		if time.Now().After(end) {
			close(r.done)
			return nil, errors.New("the Pod watch did not sync within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r, nil
}

func (r *podRecorder) stop() { close(r.done) }

func (r *podRecorder) observe(obj any, at time.Time) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	id := p.Annotations[k8srunner.AnnotationID]
	if id == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.byUID[string(p.UID)]
	if t == nil {
		t = &podTimes{instance: p.Labels[k8srunner.LabelInstance], seen: at, created: p.CreationTimestamp.Time}
		r.byUID[string(p.UID)] = t
		r.pods[id] = append(r.pods[id], t)
	}
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Running != nil && t.running.IsZero():
			t.running, t.startedAt = at, c.State.Running.StartedAt.Time
		case c.State.Terminated != nil:
			if t.running.IsZero() {
				t.running, t.startedAt = at, c.State.Terminated.StartedAt.Time
			}
			if t.terminated.IsZero() {
				t.terminated = at
			}
		}
	}
}

// of returns the last Pod of build id and how many it had.
func (r *podRecorder) of(id string) (*podTimes, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.pods[id]
	if len(ps) == 0 {
		return nil, 0
	}
	return ps[len(ps)-1], len(ps)
}

// replicaOf names the replica whose kubernetes runner labels its Pods
// with instance: its configured instance, which the gateway suffixes.
func (e *env) replicaOf(instance string) string {
	for _, in := range e.instances {
		if instance == in || strings.HasPrefix(instance, in+"-") {
			return in
		}
	}
	return instance
}

// stat is the median and p90 (nearest rank) of ds.
type stat struct{ med, p90 time.Duration }

func statOf(ds []time.Duration) stat {
	return stat{bu.Median(ds), bu.Percentile(ds, 90)}
}

func (s stat) String() string { return fmt.Sprintf("%s (p90 %s)", bu.Secs(s.med), bu.Secs(s.p90)) }

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a.Seconds()/b.Seconds())
}

// print writes the tables of the rounds so far to w.
func (e *env) print(w io.Writer, rounds int) {
	c := e.c
	fmt.Fprintf(w, "%d builds per case, each its own project (%d files, %d KiB, RUN writes %d files), submitted at once by %d buildctl-lite clients; %d round(s), interleaved. Load average at the end: %s.\n\n",
		c.builds, c.files, c.bytes>>10, c.genFiles, c.builds, rounds, bu.LoadAvg())
	type agg struct {
		walls, lat, toFirst []time.Duration
		runs                []string
		rss                 []int64 // per gateway, max over rounds
	}
	aggs := map[string]*agg{}
	for _, k := range []string{caseLocal, caseReplicas} {
		a := &agg{}
		for _, s := range e.res[k] {
			a.walls = append(a.walls, s.wall)
			a.runs = append(a.runs, bu.Secs(s.wall))
			for i, m := range s.rss {
				if i >= len(a.rss) {
					a.rss = append(a.rss, 0)
				}
				a.rss[i] = max(a.rss[i], m)
			}
			for _, b := range s.builds {
				a.lat = append(a.lat, b.end.Sub(b.start))
				a.toFirst = append(a.toFirst, b.firstLine.Sub(b.started))
			}
		}
		aggs[k] = a
	}
	la, lb := aggs[caseLocal], aggs[caseReplicas]
	perReplica := map[string]int{}
	retried := 0
	for _, s := range e.res[caseReplicas] {
		for _, b := range s.builds {
			if b.pod == nil {
				continue
			}
			perReplica[e.replicaOf(b.pod.instance)]++
			if b.pods > 1 {
				retried++
			}
		}
	}
	var rb []string
	for _, inst := range e.instances {
		rb = append(rb, fmt.Sprintf("%s: %d", inst, perReplica[inst]))
	}
	rssB := make([]string, len(lb.rss))
	for i, m := range lb.rss {
		rssB[i] = e.instances[i] + " " + bu.MiB(m)
	}
	rssA := "–"
	if len(la.rss) > 0 {
		rssA = bu.MiB(la.rss[0])
	}
	fmt.Fprintln(w, "| case | wall, first submit to last digest (s): median | runs (s) | per-build latency (s): median (p90) | build start to kaniko's first log line (s): median (p90) | gateway peak RSS (MiB) | builds run per replica |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	fmt.Fprintf(w, "| (a) one gateway, kaniko runner, concurrency %d | %s | %s | %s | %s | %s | – |\n",
		c.conc, bu.Secs(bu.Median(la.walls)), strings.Join(la.runs, ", "), statOf(la.lat), statOf(la.toFirst), rssA)
	fmt.Fprintf(w, "| (b) 2 replicas on PostgreSQL, kubernetes runner, concurrency %d each | %s | %s | %s | %s | %s | %s |\n",
		c.replicaConc, bu.Secs(bu.Median(lb.walls)), strings.Join(lb.runs, ", "), statOf(lb.lat), statOf(lb.toFirst), strings.Join(rssB, ", "), strings.Join(rb, ", "))
	fmt.Fprintf(w, "| (b)/(a) | %s | | %s | %s | | |\n\n",
		ratio(bu.Median(lb.walls), bu.Median(la.walls)), ratio(bu.Median(lb.lat), bu.Median(la.lat)), ratio(bu.Median(lb.toFirst), bu.Median(la.toFirst)))

	// Where a build's time in its slot goes, both cases side by side.
	series := func(k string, f func(b *build) (time.Duration, bool)) stat {
		var ds []time.Duration
		for _, s := range e.res[k] {
			for _, b := range s.builds {
				if d, ok := f(b); ok {
					ds = append(ds, d)
				}
			}
		}
		return statOf(ds)
	}
	always := func(f func(b *build) time.Duration) func(*build) (time.Duration, bool) {
		return func(b *build) (time.Duration, bool) { return f(b), true }
	}
	onPod := func(f func(b *build, p *podTimes) time.Duration) func(*build) (time.Duration, bool) {
		return func(b *build) (time.Duration, bool) {
			if b.pod == nil {
				return 0, false
			}
			return f(b, b.pod), true
		}
	}
	fmt.Fprint(w, "Where a build's time in its slot goes (median / p90 over all builds, seconds; – where it does not apply):\n\n")
	fmt.Fprintln(w, "| from | to | (a) kaniko runner | (b) kubernetes runner |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, row := range []struct {
		from, to string
		f        func(*build) (time.Duration, bool)
	}{
		{"build started (`started_at`)", "build finished (`finished_at`)", always(func(b *build) time.Duration { return b.finished.Sub(b.started) })},
		{"build started", "kaniko's first log line (as the client receives it)", always(func(b *build) time.Duration { return b.firstLine.Sub(b.started) })},
		{"build started", "Pod created (seen by a watch)", onPod(func(b *build, p *podTimes) time.Duration { return p.seen.Sub(b.started) })},
		{"Pod created (watch)", "container running (watch)", onPod(func(b *build, p *podTimes) time.Duration { return p.running.Sub(p.seen) })},
		{"container running (watch)", "kaniko's first log line", onPod(func(b *build, p *podTimes) time.Duration { return b.firstLine.Sub(p.running) })},
		{"Pod `creationTimestamp`", "container `startedAt` (the Pod's status, whole seconds)", onPod(func(b *build, p *podTimes) time.Duration { return p.startedAt.Sub(p.created) })},
		{"kaniko's first log line", "its last", always(func(b *build) time.Duration { return b.lastLine.Sub(b.firstLine) })},
		{"kaniko's last log line", "`#buildgw pushing` (sandbox or Pod gone, image taken in)", always(func(b *build) time.Duration { return b.pushing.Sub(b.lastLine) })},
		{"kaniko's last log line", "container terminated (watch)", onPod(func(b *build, p *podTimes) time.Duration { return p.terminated.Sub(b.lastLine) })},
		{"container terminated (watch)", "Pod deleted (watch)", onPod(func(b *build, p *podTimes) time.Duration { return p.gone.Sub(p.terminated) })},
		{"Pod deleted (watch)", "`#buildgw pushing`", onPod(func(b *build, p *podTimes) time.Duration { return b.pushing.Sub(p.gone) })},
	} {
		cell := func(k string) string {
			if len(e.res[k]) == 0 {
				return "–"
			}
			var n int
			for _, s := range e.res[k] {
				for _, b := range s.builds {
					if _, ok := row.f(b); ok {
						n++
					}
				}
			}
			if n == 0 {
				return "–"
			}
			st := series(k, row.f)
			return bu.Secs(st.med) + " / " + bu.Secs(st.p90)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", row.from, row.to, cell(caseLocal), cell(caseReplicas))
	}
	if len(e.res[caseLocal]) == 0 || len(e.res[caseReplicas]) == 0 {
		return
	}
	fmt.Fprintf(w, "\nOverhead of the Pod start per build, median: %ss more from a build's start to kaniko's first log line than the kaniko runner's local sandbox (%ss).\n",
		bu.Secs(bu.Median(lb.toFirst)-bu.Median(la.toFirst)), bu.Secs(bu.Median(la.toFirst)))
	endA := series(caseLocal, always(func(b *build) time.Duration { return b.pushing.Sub(b.lastLine) })).med
	endB := series(caseReplicas, always(func(b *build) time.Duration { return b.pushing.Sub(b.lastLine) })).med
	fmt.Fprintf(w, "Overhead of the Pod's end per build, median: %ss more from kaniko's last log line to the push than with the local sandbox (%ss).\n",
		bu.Secs(endB-endA), bu.Secs(endA))
	if retried > 0 {
		fmt.Fprintf(w, "%d builds of (b) had more than one Pod (run again).\n", retried)
	}
	fmt.Fprintln(w, "Clients alternate between the replicas (half the submissions each); which replica runs a build is whichever claims it. Peak RSS: the gateway process alone, sampled every 100 ms, the highest of the rounds. Every image was pulled back and checked file by file.")
}

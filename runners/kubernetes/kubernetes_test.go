package kubernetes

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/runnertest"
	df "github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testcluster"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/netmode"
)

// env is what the tests share: a namespace of their own on the one-node
// cluster, the executor image in its containerd, the seccomp profile on
// its kubelet, and a host address that the Pods reach.
type env struct {
	cluster   *testcluster.Cluster
	client    kubernetes.Interface
	namespace string
	image     string
	hostIP    string
}

func setup(t *testing.T) *env {
	t.Helper()
	c := testcluster.Start(t)
	exe := testenv.Executor(t)
	img, err := ExecutorImage(exe, "/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// Named by digest, so that tests of another executor never share it.
	ref := "buildgw.local/kaniko-executor:" + d.Hex[:16]
	tarPath := filepath.Join(t.TempDir(), "executor.tar")
	if err := WriteExecutorImage(tarPath, ref, img); err != nil {
		t.Fatal(err)
	}
	c.ImportImage(t, tarPath)
	profile, err := SeccompProfile()
	if err != nil {
		t.Fatal(err)
	}
	c.InstallSeccompProfile(t, SeccompProfileName, profile)

	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("buildgw-test-%d", time.Now().UnixNano()%1e9)
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
	t.Cleanup(func() { client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// Pods are refused until the namespace's default ServiceAccount exists.
	for end := time.Now().Add(testenv.Scale(time.Minute)); ; time.Sleep(100 * time.Millisecond) {
		if _, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		} else if time.Now().After(end) {
			t.Fatalf("namespace %s has no default ServiceAccount: %v", ns, err)
		}
	}
	return &env{cluster: c, client: client, namespace: ns, image: ref, hostIP: c.HostLink(t)}
}

func (e *env) runner(t *testing.T, opts ...Option) *Runner {
	t.Helper()
	r, err := New(append([]Option{
		WithKubeconfig(e.cluster.Kubeconfig),
		WithNamespace(e.namespace),
		WithImage(e.image, corev1.PullNever),
		WithDataServer(net.JoinHostPort(e.hostIP, "0"), ""),
		WithTimeout(testenv.Scale(10 * time.Minute)),
		// Small enough for the one-node cluster to run the suite's
		// builds side by side.
		WithResources(corev1.ResourceRequirements{}),
	}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestConformance runs the runner suite on the one-node cluster: every
// build a Pod running the executor image built from this module.
func TestConformance(t *testing.T) {
	e := setup(t)
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	runnertest.Run(t, func(t *testing.T) builder.Runner {
		r := e.runner(t)
		if err := r.Available(context.Background()); err != nil {
			t.Fatalf("Available: %v", err)
		}
		return r
	}, runnertest.WithBaseImages(store), runnertest.WithOneUser(
		"without user namespaces for Pods (hostUsers: false, which needs containerd 2), "+
			"a Pod's user maps only its own uid into the sandbox's user namespace"))
	// Nothing of the suite's builds is left in the namespace.
	ctx := context.Background()
	pods, err := e.client.CoreV1().Pods(e.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		t.Errorf("Pod %s left after the suite", p.Name)
	}
	nps, err := e.client.NetworkingV1().NetworkPolicies(e.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nps.Items {
		t.Errorf("NetworkPolicy %s left after the suite", n.Name)
	}
}

func TestPodName(t *testing.T) {
	long := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ id, want string }{
		{"abc123", "buildgw-abc123"},
		{"runnertest-0a1b", "buildgw-runnertest-0a1b"},
		{"Upper_Case", "buildgw-upper-case-" + "7d1b6d5ec8b7a3e4"},
	} {
		got := PodName(tc.id)
		if tc.id == "Upper_Case" {
			// The hash is the id's; only its shape is fixed here.
			if len(got) != len(tc.want) || got[:19] != tc.want[:19] {
				t.Errorf("PodName(%q) = %q, want the shape of %q", tc.id, got, tc.want)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("PodName(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
	if a, b := PodName(long), PodName(long+"x"); a == b || len(a) > 63 || len(b) > 63 {
		t.Errorf("PodName of two long ids = %q, %q: want distinct DNS labels", a, b)
	}
	if a, b := PodName("A"), PodName("a"); a == b {
		t.Errorf("PodName(%q) = PodName(%q) = %q", "A", "a", a)
	}
}

// TestObjects creates a build's Pod and NetworkPolicy on the API server
// (dry run: validated and defaulted, not run) and checks what the server
// holds: no privilege, no token, the deadline and resources, and egress
// only to the data server or, with egress, never to cluster-internal or
// metadata addresses. The test cluster has no NetworkPolicy controller,
// so what the policy does is not tested here.
func TestObjects(t *testing.T) {
	e := setup(t)
	r := e.runner(t, WithResources(corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	}), WithTimeout(90*time.Second))
	ctx := context.Background()
	req := &builder.Request{ID: "objects-1", Dockerfile: "Dockerfile", BuildArgs: map[string]string{"A": "1"}}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	pod, err := e.client.CoreV1().Pods(e.namespace).Create(ctx, r.pod(PodName(req.ID), req, netmode.None, "https://x/", "tok"), dry)
	if err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	s := pod.Spec
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken = %v, want false", s.AutomountServiceAccountToken)
	}
	if s.ActiveDeadlineSeconds == nil || *s.ActiveDeadlineSeconds != 90 {
		t.Errorf("activeDeadlineSeconds = %v, want 90", s.ActiveDeadlineSeconds)
	}
	psc := s.SecurityContext
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != ImageUser {
		t.Errorf("Pod securityContext = %+v, want runAsNonRoot and runAsUser %d", psc, ImageUser)
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || *sp.LocalhostProfile != SeccompProfileName {
		t.Errorf("seccompProfile = %+v, want Localhost %s", sp, SeccompProfileName)
	}
	for _, v := range s.Volumes {
		if v.HostPath != nil || v.Secret != nil || v.Projected != nil {
			t.Errorf("volume %s = %+v, want only an emptyDir", v.Name, v.VolumeSource)
		}
	}
	if len(s.Containers) != 1 {
		t.Fatalf("containers = %d, want 1", len(s.Containers))
	}
	c := s.Containers[0]
	sc := c.SecurityContext
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged == nil || *sc.Privileged {
		t.Errorf("container securityContext = %+v, want no privilege and no escalation", sc)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities = %+v, want all dropped and none added", sc.Capabilities)
	}
	if got := c.Resources.Limits.Memory().String(); got != "512Mi" {
		t.Errorf("memory limit = %s, want 512Mi", got)
	}
	for _, ev := range c.Env {
		if ev.ValueFrom != nil {
			t.Errorf("env %s comes from %+v: the Pod gets no secret of the cluster", ev.Name, ev.ValueFrom)
		}
	}
	if pod.Labels[LabelInstance] != DefaultInstance || pod.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("labels = %v, want the instance's", pod.Labels)
	}

	host, port := splitURL(r.DataURL())
	for _, mode := range []netmode.Mode{netmode.None, netmode.Egress} {
		np, err := e.client.NetworkingV1().NetworkPolicies(e.namespace).Create(ctx, r.networkPolicy(PodName(req.ID), mode), dry)
		if err != nil {
			t.Fatalf("creating the NetworkPolicy (%s): %v", mode, err)
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("%s: policyTypes = %v, want Ingress and Egress", mode, np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) != 0 {
			t.Errorf("%s: ingress rules %+v, want none", mode, np.Spec.Ingress)
		}
		if np.Spec.PodSelector.MatchLabels[LabelBuild] != PodName(req.ID) {
			t.Errorf("%s: podSelector = %v, want the build's Pod", mode, np.Spec.PodSelector)
		}
		first := np.Spec.Egress[0]
		if first.To[0].IPBlock.CIDR != host+"/32" || first.Ports[0].Port.IntValue() != port {
			t.Errorf("%s: first egress rule = %+v, want the data server %s:%d", mode, first, host, port)
		}
		switch mode {
		case netmode.None:
			if len(np.Spec.Egress) != 1 {
				t.Errorf("none: %d egress rules, want only the data server's", len(np.Spec.Egress))
			}
		case netmode.Egress:
			if len(np.Spec.Egress) != 2 {
				t.Fatalf("egress: %d egress rules, want 2", len(np.Spec.Egress))
			}
			for _, peer := range np.Spec.Egress[1].To {
				b := peer.IPBlock
				for _, must := range []string{"169.254.0.0/16", "10.0.0.0/8", "fe80::/10", "fc00::/7", "127.0.0.0/8"} {
					if (b.CIDR == "0.0.0.0/0") == (must[0] != 'f') && !slices.Contains(b.Except, must) {
						t.Errorf("egress: %s except %v, want %s refused", b.CIDR, b.Except, must)
					}
				}
			}
		}
	}
}

// TestRuntimeDefaultRefusesSandbox shows why the runner ships a seccomp
// profile of its own: under the runtime's default profile the sandbox
// cannot make its namespaces, and the build fails saying so.
func TestRuntimeDefaultRefusesSandbox(t *testing.T) {
	e := setup(t)
	r := e.runner(t, WithSeccompProfile("RuntimeDefault"))
	req := emptyBuild(t, "FROM scratch\n")
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	img, err := r.Build(ctx, req, &log)
	if err == nil {
		t.Fatalf("Build under RuntimeDefault = %v, nil; want the sandbox refused", img)
	}
	if want := "starting the sandbox: fork/exec /kaniko/executor: operation not permitted"; !strings.Contains(log.String(), want) {
		t.Errorf("Build under RuntimeDefault: log = %q, want it to contain %q", log.String(), want)
	}
}

// emptyBuild returns a request for a build of dockerfile with an empty
// context, laid out as jobs.Manager lays one out.
func emptyBuild(t *testing.T, dockerfile string) *builder.Request {
	t.Helper()
	ws := t.TempDir()
	req := &builder.Request{
		ID:         "k8s-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Workspace:  ws,
		ContextDir: filepath.Join(ws, "context"),
		OutputDir:  filepath.Join(ws, "out"),
		Dockerfile: "Dockerfile",
	}
	for _, d := range []string{req.ContextDir, req.OutputDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(req.ContextDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return req
}

// TestReap: a restarted gateway deletes the Pods and NetworkPolicies its
// instance left, and waits until the Pods are gone; another instance's
// stay.
func TestReap(t *testing.T) {
	e := setup(t)
	mine, other := e.runner(t), e.runner(t, WithInstance("other-gateway"))
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	var names []string
	for i, r := range []*Runner{mine, other} {
		req := emptyBuild(t, "FROM scratch\n")
		name := PodName(req.ID + "-" + strconv.Itoa(i))
		names = append(names, name)
		if _, err := e.client.NetworkingV1().NetworkPolicies(e.namespace).Create(ctx, r.networkPolicy(name, netmode.None), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// A Pod that would run for long: the executor image holds nothing
		// else, so it waits for a data server that never answers.
		p := r.pod(name, req, netmode.None, "https://"+net.JoinHostPort(e.hostIP, "9")+"/x", "t")
		if _, err := e.client.CoreV1().Pods(e.namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { other.remove(context.Background(), names[1]) })
	cleaned, err := mine.Reap(ctx, nil)
	if err != nil {
		t.Fatalf("Reap: %v", err)
	}
	want := []string{"pod/" + names[0], "networkpolicy/" + names[0]}
	if !slices.Equal(cleaned, want) {
		t.Errorf("Reap() = %q, want %q", cleaned, want)
	}
	if _, err := e.client.CoreV1().Pods(e.namespace).Get(ctx, names[0], metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Pod %s after Reap: %v, want not found", names[0], err)
	}
	if _, err := e.client.CoreV1().Pods(e.namespace).Get(ctx, names[1], metav1.GetOptions{}); err != nil {
		t.Errorf("the other instance's Pod %s after Reap: %v, want it kept", names[1], err)
	}
	if _, err := e.client.NetworkingV1().NetworkPolicies(e.namespace).Get(ctx, names[1], metav1.GetOptions{}); err != nil {
		t.Errorf("the other instance's NetworkPolicy %s after Reap: %v, want it kept", names[1], err)
	}
}

// TestPodInitHidden: a build sees the Pod's own processes (the sandbox
// binds the container's proc), among them the Pod's init, whose
// environment held the build's one-time token and whose root holds the
// context and the output on their way. None of it may be readable from
// a RUN step.
func TestPodInitHidden(t *testing.T) {
	e := setup(t)
	r := e.runner(t)
	host := testenv.Registry(t)
	base := testenv.Busybox(t, host)
	req := emptyBuild(t, "FROM "+base+"\n"+
		"RUN for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f 2>/dev/null; done | grep -c BUILDGW_POD > /environ.txt; "+
		"ls /proc/1/root/ > /root.txt 2>&1; ls /proc > /procs.txt; true\n")
	req.InsecureRegistries = []string{host}
	img, log, err := buildWithBases(t, r, basestoreFor(t), req)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log)
	}
	fsys := imageFiles(t, img)
	t.Logf("processes the build sees: %q", fsys["/procs.txt"])
	if got := strings.TrimSpace(fsys["/environ.txt"]); got != "0" {
		t.Errorf("a RUN step found BUILDGW_POD variables in %s environments, want none", got)
	}
	// Its command line is kaniko's arguments, which the build's own
	// kaniko has too: not hidden.
	if got := fsys["/root.txt"]; strings.Contains(got, "buildgw") || strings.Contains(got, "kaniko") {
		t.Errorf("a RUN step listed the Pod init's root: %q", got)
	}
	if strings.Contains(log, r.DataURL()) {
		t.Errorf("the build log holds the data server's URL")
	}
}

// TestNetwork: a build without egress reaches nothing, not even the
// host that the Pods reach; with egress its RUN steps share the Pod's
// network (which the build's NetworkPolicy bounds in a cluster that
// enforces policies; this one does not).
func TestNetwork(t *testing.T) {
	e := setup(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(e.hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "reached-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, marker) })}
	go srv.Serve(ln)
	defer srv.Close()
	host := testenv.Registry(t)
	base := testenv.Busybox(t, host)
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := e.runner(t)
	for _, tc := range []struct {
		mode netmode.Mode
		want string
	}{
		{netmode.None, "unreachable"},
		{netmode.Egress, marker},
	} {
		// busybox-static's wget crashes on its resolver; nc takes the
		// address as it is.
		h, p, _ := net.SplitHostPort(ln.Addr().String())
		req := emptyBuild(t, "FROM "+base+"\n"+
			"RUN { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 "+h+" "+p+" | grep -o 'reached-[a-z0-9]*' || echo unreachable; } > /got.txt\n")
		req.InsecureRegistries = []string{host}
		req.Network = tc.mode
		img, log, err := buildWithBases(t, r, store, req)
		if err != nil {
			t.Fatalf("Build(network %s): %v\n%s", tc.mode, err, log)
		}
		if got := strings.TrimSpace(imageFiles(t, img)["/got.txt"]); got != tc.want {
			t.Errorf("Build(network %s): a RUN step got %q from the host link, want %q\n%s", tc.mode, got, tc.want, log)
		}
	}
}

// TestExtraCAs: the roots the operator adds (a registry's ca_file) reach
// the executor in the build's Pod: kaniko fetches an ADD URL from a server
// whose certificate only they sign, and refuses it without them.
func TestExtraCAs(t *testing.T) {
	e := setup(t)
	certFile, keyFile, caFile := testenv.SelfSignedIP(t, t.TempDir(), e.hostIP)
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(e.hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "fetched-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, marker) })}
	go srv.ServeTLS(ln, certFile, keyFile)
	defer srv.Close()
	host := testenv.Registry(t)
	base := testenv.Busybox(t, host)
	store := basestoreFor(t)
	r := e.runner(t)
	for _, tc := range []struct {
		name string
		cas  []byte
	}{
		{"without", nil},
		{"with", ca},
	} {
		req := emptyBuild(t, "FROM "+base+"\nADD https://"+ln.Addr().String()+"/marker.txt /marker.txt\n")
		req.InsecureRegistries = []string{host}
		req.Network = netmode.Egress
		req.ExtraCAs = tc.cas
		img, log, err := buildWithBases(t, r, store, req)
		if tc.cas == nil {
			if err == nil || !strings.Contains(log, "certificate signed by unknown authority") {
				t.Errorf("Build(ADD from a private CA's server, %s the CA) = %v, want it refused as signed by an unknown authority\n%s", tc.name, err, log)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Build(ADD from a private CA's server, %s the CA): %v\n%s", tc.name, err, log)
		}
		if got := imageFiles(t, img)["/marker.txt"]; got != marker {
			t.Errorf("Build(ADD from a private CA's server, %s the CA): /marker.txt = %q, want %q", tc.name, got, marker)
		}
	}
}

// buildWithBases analyses req's Dockerfile, fetches its bases into store
// as the gateway would, and builds it with r; it returns the build log.
func buildWithBases(t *testing.T, r *Runner, store *basestore.Store, req *builder.Request) (v1.Image, string, error) {
	t.Helper()
	var err error
	if req.Analysis, err = df.Load(req.ContextDir, req.Dockerfile, nil, ""); err != nil {
		t.Fatal(err)
	}
	if req.BaseImages, err = store.Prepare(context.Background(), req, io.Discard); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	var log strings.Builder
	img, err := r.Build(ctx, req, &log)
	return img, log.String(), err
}

func basestoreFor(t *testing.T) *basestore.Store {
	t.Helper()
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// imageFiles returns the regular files of img's layers by absolute path.
func imageFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	fsys := map[string]string{}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fsys
		}
		if err != nil {
			t.Fatalf("reading the image: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		fsys["/"+strings.TrimPrefix(h.Name, "/")] = string(b)
	}
}

// TestRawNetwork: with egress a build shares the Pod's network, which a
// NetworkPolicy bounds at the IP layer; frames of its own would go past
// neither, as every socket that makes them is refused (the Pod holds no
// CAP_NET_RAW, and the sandbox's filter refuses raw sockets and
// io_uring), while ordinary sockets work.
func TestRawNetwork(t *testing.T) {
	e := setup(t)
	probe := testenv.Build(t, "./internal/sandboxprobe", "sandboxprobe")
	ln, err := net.Listen("tcp", net.JoinHostPort(e.hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "host-link-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, marker) })}
	go srv.Serve(ln)
	defer srv.Close()
	targets := map[string]string{
		"host the Pods reach": ln.Addr().String(),
		"metadata service":    "169.254.169.254:80",
	}
	var steps []string
	for _, addr := range targets {
		h, p, _ := net.SplitHostPort(addr)
		steps = append(steps, fmt.Sprintf("/p rawtcp %s %s /", h, p))
	}
	host := testenv.Registry(t)
	base := testenv.Busybox(t, host)
	req := emptyBuild(t, "FROM "+base+"\nCOPY sandboxprobe /p\n"+
		"RUN chmod 755 /p && (/p sockets; /p rawip; "+strings.Join(steps, "; ")+") > /root.txt 2>&1; cat /root.txt\n")
	pb, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(req.ContextDir, "sandboxprobe"), pb, 0o644); err != nil {
		t.Fatal(err)
	}
	req.InsecureRegistries = []string{host}
	req.Network = netmode.Egress
	img, log, err := buildWithBases(t, e.runner(t), basestoreFor(t), req)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log)
	}
	out := imageFiles(t, img)["/root.txt"]
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("probe's output:\n%s", out)
		}
	})
	runnertest.CheckRawRefused(t, out, targets, marker)
}

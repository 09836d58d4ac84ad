package kaniko

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/basestore"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/runners/kaniko/sandbox"
)

// netns is a network namespace that the test made, with a goroutine
// locked to a thread inside it: processes started from that thread and
// sockets opened on it belong to the namespace.
type netns struct {
	work chan func()
	done chan struct{}
}

// newNetns makes a fresh network namespace with loopback up.
func newNetns(t *testing.T) *netns {
	t.Helper()
	n := &netns{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, and with it
		// the namespace.
		runtime.LockOSThread()
		defer close(n.done)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-errc; err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	t.Cleanup(func() { close(n.work); <-n.done })
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

// do runs f on the namespace's thread.
func (n *netns) do(f func()) {
	ran := make(chan struct{})
	n.work <- func() { defer close(ran); f() }
	<-ran
}

// run runs a command inside the namespace.
func (n *netns) run(t *testing.T, args ...string) {
	t.Helper()
	var out []byte
	var err error
	n.do(func() { out, err = exec.Command(args[0], args[1:]...).CombinedOutput() })
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// serve answers body over HTTP on addr inside the namespace.
func (n *netns) serve(t *testing.T, addr, body string) string {
	t.Helper()
	var ln net.Listener
	var err error
	n.do(func() { ln, err = net.Listen("tcp4", addr) })
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// TestNetwork checks what RUN steps can reach in each network mode. The
// gateway side of the sandbox (the runner, slirp4netns) runs in a network
// namespace made by the test, standing for the gateway's host: a service
// on its loopback and on all its addresses, a "metadata service" on
// 169.254.169.254, and a veth to a second namespace, standing for the
// outside world, with a server that only egress reaches.
func TestNetwork(t *testing.T) {
	testenv.RequireSandbox(t)
	if os.Geteuid() != 0 {
		t.Skip("making network namespaces and veth pairs needs root")
	}
	for _, tool := range []string{"ip", "slirp4netns", "iptables-restore", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (scripts/setup installs it): %v", tool, err)
		}
	}
	exe := testenv.Executor(t)
	probe := testenv.Build(t, "./runners/kaniko/testdata/netprobe", "netprobe")
	regSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(regSrv.Close)
	regHost := regSrv.Listener.Addr().String()
	base := testenv.Busybox(t, regHost)
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	host := newNetns(t)
	host.run(t, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
	// The outside world: a namespace of its own behind a veth pair.
	holder := exec.Command("unshare", "--net", "sleep", "3600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	time.Sleep(100 * time.Millisecond) // let unshare enter its namespace
	pid := fmt.Sprint(holder.Process.Pid)
	host.run(t, "ip", "link", "add", "bgwhost", "type", "veth", "peer", "name", "bgwfar", "netns", pid)
	host.run(t, "ip", "addr", "add", "10.213.0.1/24", "dev", "bgwhost")
	host.run(t, "ip", "link", "set", "bgwhost", "up")
	far := &netns{work: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		defer close(far.done)
		f, err := os.Open("/proc/" + pid + "/ns/net")
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err != nil {
			panic(err)
		}
		for fn := range far.work {
			fn()
		}
	}()
	t.Cleanup(func() { close(far.work); <-far.done })
	far.run(t, "ip", "link", "set", "lo", "up")
	far.run(t, "ip", "addr", "add", "10.213.0.2/24", "dev", "bgwfar")
	far.run(t, "ip", "link", "set", "bgwfar", "up")

	// The gateway's API and registry stand-in: every address of the host.
	_, port, _ := net.SplitHostPort(host.serve(t, "0.0.0.0:0", "gateway"))
	outside := far.serve(t, "10.213.0.2:0", "outside")
	targets := map[string]string{
		"host loopback":           "127.0.0.1:" + port,
		"host through slirp":      slirpGateway + ":" + port,
		"metadata service":        "169.254.169.254:" + port,
		"host's own address":      "10.213.0.1:" + port,
		"server outside the host": outside,
	}
	// Make sure the test's world is as described before a sandbox looks.
	for name, addr := range targets {
		if name == "host through slirp" {
			continue
		}
		var c net.Conn
		host.do(func() { c, err = net.DialTimeout("tcp4", addr, 2*time.Second) })
		if err != nil {
			t.Fatalf("%s (%s) unreachable from the host namespace: %v", name, addr, err)
		}
		c.Close()
	}

	var urls []string
	for _, addr := range targets {
		urls = append(urls, "http://"+addr+"/")
	}
	dockerfile := `ARG BASE
FROM ${BASE}
ARG TARGETS
COPY netprobe /netprobe
RUN /netprobe $TARGETS > /net.txt; cat /net.txt
`
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, mode := range []string{sandbox.NetworkNone, sandbox.NetworkEgress} {
		wg.Add(1)
		t.Run(mode, func(t *testing.T) {
			defer wg.Done()
			req := netRequest(t, r, dockerfile, probe, map[string]string{"BASE": base, "TARGETS": strings.Join(urls, " ")}, regHost)
			req.Network = mode
			b, err := store.Prepare(context.Background(), req, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			req.BaseImages = b
			var logBuf strings.Builder
			var berr error
			var body string
			host.do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				im, err := r.Build(ctx, req, &logBuf)
				if berr = err; err == nil {
					body, berr = fileOf(im, "net.txt")
				}
			})
			if berr != nil {
				t.Fatalf("Build with network %s: %v\nlog:\n%s", mode, berr, logBuf.String())
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("build log:\n%s", logBuf.String())
				}
			})
			// No step may change the network it was given.
			if !strings.Contains(body, "netadmin: operation not permitted\n") {
				t.Errorf("network %s: a RUN step could change the sandbox's network:\n%s", mode, body)
			}
			if n := strings.Count(body, "\n"); n != len(targets)+1 {
				t.Errorf("network %s: %d results, want %d:\n%s", mode, n, len(targets), body)
			}
			for name, addr := range targets {
				reached := strings.Contains(body, "reached http://"+addr+"/ ")
				want := mode == sandbox.NetworkEgress && name == "server outside the host"
				if reached != want {
					t.Errorf("network %s: %s (%s) reached = %v, want %v\n%s", mode, name, addr, reached, want, body)
				}
			}
			if mode == sandbox.NetworkEgress && !strings.Contains(body, "reached http://"+outside+"/ outside") {
				t.Errorf("network egress: the outside server's answer is missing:\n%s", body)
			}
		})
	}
	wg.Wait()
}

// netRequest lays out a workspace for one build, as builder.Manager does,
// with the probe binary (if any) in the context as netprobe.
func netRequest(t *testing.T, r *Runner, dockerfile, probe string, args map[string]string, insecure string) *builder.Request {
	t.Helper()
	parent, err := os.MkdirTemp("", "buildgw-nettest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o711)
	ws := filepath.Join(parent, "ws")
	ctxDir, out := filepath.Join(ws, "context"), filepath.Join(ws, "out")
	for _, d := range []string{ws, ctxDir, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(ws, 0o700)
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	owned := []string{ws, ctxDir, out, filepath.Join(ctxDir, "Dockerfile")}
	if probe != "" {
		pb, err := os.ReadFile(probe)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "netprobe"), pb, 0o755); err != nil {
			t.Fatal(err)
		}
		owned = append(owned, filepath.Join(ctxDir, "netprobe"))
	}
	if uid, gid, differs := r.Owner(); differs {
		for _, p := range owned {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return &builder.Request{ID: "nettest", Workspace: ws, ContextDir: ctxDir, Dockerfile: "Dockerfile",
		BuildArgs: args, OutputDir: out, InsecureRegistries: []string{insecure}}
}

// fileOf returns the content of the file at p (no leading slash) in img.
func fileOf(img v1.Image, p string) (string, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s not in the image: %w", p, err)
		}
		if strings.TrimPrefix(h.Name, "/") == p {
			b, err := io.ReadAll(tr)
			return string(b), err
		}
	}
}

// TestNoPull checks that a sandbox never pulls: a base image the gateway
// did not fetch fails the build, naming the image, although its registry
// is on the host's loopback.
func TestNoPull(t *testing.T) {
	testenv.RequireSandbox(t)
	exe := testenv.Executor(t)
	regHost := testenv.Registry(t)
	base := testenv.Busybox(t, regHost)
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	req := netRequest(t, r, "ARG BASE\nFROM ${BASE}\nRUN true\n", "", map[string]string{"BASE": base}, regHost)
	var logBuf strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if img, err := r.Build(ctx, req, &logBuf); err == nil {
		t.Fatalf("Build without base images = %v, nil; want an error", img)
	}
	if want := "no images were handed to this build"; !strings.Contains(logBuf.String(), want) {
		t.Errorf("Build without base images: log lacks %q:\n%s", want, logBuf.String())
	}
}

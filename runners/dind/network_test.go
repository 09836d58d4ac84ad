package dind

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/runners/egress"
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
	return enterNetns(t, func() error { return unix.Unshare(unix.CLONE_NEWNET) })
}

// joinNetns enters the network namespace of pid.
func joinNetns(t *testing.T, pid int) *netns {
	t.Helper()
	return enterNetns(t, func() error {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	})
}

func enterNetns(t *testing.T, enter func() error) *netns {
	t.Helper()
	n := &netns{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		defer close(n.done)
		if err := enter(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-errc; err != nil {
		t.Fatalf("entering a network namespace: %v", err)
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
// runner (and so the job's daemon's parent and slirp4netns) runs in a
// network namespace made by the test, standing for the gateway's host: a
// service on its loopback and on all its addresses (the gateway's API and
// registry), a "metadata service" on 169.254.169.254, and a veth to a
// second namespace, standing for the outside world, with a server that
// only egress reaches. The probe (the kaniko runner's, a static binary)
// also tries to change the network, which no RUN step may.
func TestNetwork(t *testing.T) {
	requireDocker(t)
	for _, tool := range []string{"ip", "slirp4netns", "iptables-restore", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (scripts/setup installs it): %v", tool, err)
		}
	}
	probe := testenv.Build(t, "./runners/kaniko/testdata/netprobe", "netprobe")
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)

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
	host.run(t, "ip", "link", "add", "bgwdhost", "type", "veth", "peer", "name", "bgwdfar", "netns", pid)
	host.run(t, "ip", "addr", "add", "10.214.0.1/24", "dev", "bgwdhost")
	host.run(t, "ip", "link", "set", "bgwdhost", "up")
	far := joinNetns(t, holder.Process.Pid)
	far.run(t, "ip", "addr", "add", "10.214.0.2/24", "dev", "bgwdfar")
	far.run(t, "ip", "link", "set", "bgwdfar", "up")

	// The gateway's API and registry stand-in: every address of the host.
	_, port, _ := net.SplitHostPort(host.serve(t, "0.0.0.0:0", "gateway"))
	outside := far.serve(t, "10.214.0.2:0", "outside")
	targets := map[string]string{
		"host loopback":           "127.0.0.1:" + port,
		"host through slirp":      egress.Gateway + ":" + port,
		"metadata service":        "169.254.169.254:" + port,
		"host's own address":      "10.214.0.1:" + port,
		"server outside the host": outside,
	}
	// Make sure the test's world is as described before a build looks.
	for name, addr := range targets {
		if name == "host through slirp" {
			continue
		}
		var c net.Conn
		var err error
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
	dockerfile := "ARG BASE\nFROM ${BASE}\nARG TARGETS\nCOPY netprobe /netprobe\nRUN /netprobe $TARGETS > /net.txt; cat /net.txt\n"
	pb, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		option  string // the runner's network (WithNetwork), "" for the default
		request string // Request.Network
		egress  bool
	}{
		{"none (default)", "", "", false},
		{"egress", egress.Egress, "", true},
		{"none by request", egress.Egress, egress.None, false},
		{"egress by request", egress.None, egress.Egress, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []Option
			if c.option != "" {
				opts = append(opts, WithNetwork(c.option))
			}
			r, err := New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, reg, map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": base, "TARGETS": strings.Join(urls, " ")})
			if err := os.WriteFile(filepath.Join(req.ContextDir, "netprobe"), pb, 0o755); err != nil {
				t.Fatal(err)
			}
			req.Network = c.request
			var log strings.Builder
			var body string
			var berr error
			host.do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				img, err := r.Build(ctx, req, &log)
				if berr = err; err == nil {
					body = imageFiles(t, img)["net.txt"]
				}
			})
			if berr != nil {
				t.Fatalf("Build: %v\n%s", berr, log.String())
			}
			mode := egress.None
			if c.egress {
				mode = egress.Egress
			}
			if !strings.Contains(log.String(), "network "+mode+")") {
				t.Errorf("log does not name network %s:\n%s", mode, log.String())
			}
			if !strings.Contains(body, "netadmin: operation not permitted\n") {
				t.Errorf("a RUN step could change its network:\n%s", body)
			}
			if n := strings.Count(body, "\n"); n != len(targets)+1 {
				t.Errorf("%d results, want %d:\n%s", n, len(targets)+1, body)
			}
			for name, addr := range targets {
				reached := strings.Contains(body, "reached http://"+addr+"/ ")
				want := c.egress && name == "server outside the host"
				if reached != want {
					t.Errorf("%s (%s) reached = %v, want %v\n%s", name, addr, reached, want, body)
				}
			}
			if c.egress && !strings.Contains(body, "reached http://"+outside+"/ outside") {
				t.Errorf("the outside server's answer is missing:\n%s", body)
			}
			if left := referencing(filepath.Join(req.Workspace, "dind")); len(left) > 0 {
				t.Errorf("processes left: %v", left)
			}
		})
	}
}

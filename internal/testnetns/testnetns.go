// Package testnetns gives tests network namespaces of their own, and a
// small world in them that stands for a gateway's host: what a sandbox's
// network must keep its builds away from, and an outside server that only
// egress reaches. Nothing leaves the namespaces the test makes.
package testnetns

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
)

// NS is a network namespace that the test made, with a goroutine locked
// to a thread inside it: processes started from that thread and sockets
// opened on it belong to the namespace.
type NS struct {
	work chan func()
	done chan struct{}
}

// New makes a fresh network namespace with loopback up.
func New(t *testing.T) *NS {
	t.Helper()
	return enter(t, func() error { return unix.Unshare(unix.CLONE_NEWNET) })
}

// Join enters the network namespace of pid.
func Join(t *testing.T, pid int) *NS {
	t.Helper()
	return enter(t, func() error {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	})
}

func enter(t *testing.T, enter func() error) *NS {
	t.Helper()
	n := &NS{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, and leaves
		// the namespace with it.
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
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Do runs f on the namespace's thread.
func (n *NS) Do(f func()) {
	ran := make(chan struct{})
	n.work <- func() { defer close(ran); f() }
	<-ran
}

// Run runs a command inside the namespace.
func (n *NS) Run(t *testing.T, args ...string) {
	t.Helper()
	var out []byte
	var err error
	n.Do(func() { out, err = exec.Command(args[0], args[1:]...).CombinedOutput() })
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Serve answers body over HTTP on addr inside the namespace and returns
// the address it listens on.
func (n *NS) Serve(t *testing.T, addr, body string) string {
	t.Helper()
	var ln net.Listener
	var err error
	n.Do(func() { ln, err = net.Listen("tcp4", addr) })
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// Outside names the target that only egress may reach.
const Outside = "server outside the host"

// World is a host namespace, standing for the gateway's host, and a far
// one behind a veth pair, standing for the outside world.
type World struct {
	Host, Far *NS
	// Targets are HTTP servers by what they stand for: on the host, a
	// service answering "gateway" on its loopback and every address (the
	// gateway's API, a registry) and a metadata service on
	// 169.254.169.254; Outside answers "outside" in the far namespace.
	Targets map[string]string
}

// NewWorld makes the world with the veth pair on subnet (three octets,
// e.g. "10.213.0"), unique per test, and slirpGateway (slirp4netns's way
// to the host) among the targets. It checks that the host reaches every
// target before a sandbox looks.
func NewWorld(t *testing.T, subnet, slirpGateway string) *World {
	t.Helper()
	host := New(t)
	host.Run(t, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
	holder := exec.Command("unshare", "--net", "sleep", "3600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	// The veth's far end goes into the holder's namespace: wait until
	// unshare has entered it.
	own, _ := os.Readlink("/proc/self/ns/net")
	for deadline := time.Now().Add(testenv.Scale(10 * time.Second)); ; time.Sleep(10 * time.Millisecond) {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)); err == nil && ns != own {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare --net never entered a network namespace of its own")
		}
	}
	id := subnet[strings.LastIndexByte(subnet, '.')+1:]
	hostIf, farIf := "bgw"+id+"host", "bgw"+id+"far"
	host.Run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", farIf, "netns", fmt.Sprint(holder.Process.Pid))
	host.Run(t, "ip", "addr", "add", subnet+".1/24", "dev", hostIf)
	host.Run(t, "ip", "link", "set", hostIf, "up")
	far := Join(t, holder.Process.Pid)
	far.Run(t, "ip", "addr", "add", subnet+".2/24", "dev", farIf)
	far.Run(t, "ip", "link", "set", farIf, "up")

	_, port, _ := net.SplitHostPort(host.Serve(t, "0.0.0.0:0", "gateway"))
	w := &World{Host: host, Far: far, Targets: map[string]string{
		"host loopback":      "127.0.0.1:" + port,
		"host through slirp": slirpGateway + ":" + port,
		"metadata service":   "169.254.169.254:" + port,
		"host's own address": subnet + ".1:" + port,
		Outside:              far.Serve(t, subnet+".2:0", "outside"),
	}}
	for name, addr := range w.Targets {
		if name == "host through slirp" {
			continue // exists only for a sandbox
		}
		var c net.Conn
		var err error
		host.Do(func() { c, err = net.DialTimeout("tcp4", addr, 2*time.Second) })
		if err != nil {
			t.Fatalf("%s (%s) unreachable from the host namespace: %v", name, addr, err)
		}
		c.Close()
	}
	return w
}

// URLs returns the targets as http:// URLs.
func (w *World) URLs() []string {
	var urls []string
	for _, addr := range w.Targets {
		urls = append(urls, "http://"+addr+"/")
	}
	return urls
}

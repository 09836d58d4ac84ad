package kaniko

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// slirpGateway is the host as slirp4netns shows it to the sandbox; with
// --disable-host-loopback it leads nowhere, and it is refused anyway.
const slirpGateway = "10.0.2.2"

// egress is the user-mode network of one sandbox: slirp4netns, started
// once the sandbox's namespaces exist, and the rules in the sandbox's
// network namespace that keep it from the gateway's host.
type egress struct {
	inNS     *os.File // read: the sandbox is in its namespaces
	ready    *os.File // write: the network is set up
	child    []*os.File
	slirp    *exec.Cmd
	slirpLog bytes.Buffer
}

// newEgress makes the handshake pipes and hands their sandbox ends to cmd.
func newEgress() (*egress, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	// child becomes fds 3 and 4 of the executor, as sandbox expects them.
	return &egress{inNS: inR, ready: readyW, child: []*os.File{inW, readyR}}, nil
}

// start sets up the network of the sandbox whose unshare process is pid,
// once the sandbox says it is in its namespaces, and lets it go on.
func (e *egress) start(ctx context.Context, r *Runner, pid int) error {
	for _, f := range e.child {
		f.Close()
	}
	e.inNS.SetReadDeadline(time.Now().Add(time.Minute))
	b := make([]byte, 1)
	if _, err := e.inNS.Read(b); err != nil {
		return fmt.Errorf("waiting for the sandbox's namespaces: %w", err)
	}

	// slirp4netns runs as the gateway's user: it opens /dev/net/tun, which
	// hosts may keep to root. It confines itself (--enable-sandbox drops
	// all capabilities but CAP_NET_BIND_SERVICE; seccomp). A gateway that
	// is not root reaches the sandbox's network through its user
	// namespace, which it owns.
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	args := []string{"--configure", "--mtu=65520", "--disable-host-loopback",
		"--enable-sandbox", "--enable-seccomp", "--ready-fd=3"}
	if os.Geteuid() != 0 {
		args = append(args, "--userns-path=/proc/"+strconv.Itoa(pid)+"/ns/user")
	}
	e.slirp = exec.Command(r.o.slirp, append(args, strconv.Itoa(pid), "tap0")...)
	e.slirp.ExtraFiles = []*os.File{readyW}
	e.slirp.Stdout, e.slirp.Stderr = &e.slirpLog, &e.slirpLog
	e.slirp.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.slirp.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("starting slirp4netns: %w", err)
	}
	readyW.Close()
	readyR.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := readyR.Read(b); err != nil {
		return fmt.Errorf("slirp4netns did not configure the network: %v: %s", err, strings.TrimSpace(e.slirpLog.String()))
	}

	if err := r.refuse(ctx, pid, refused()); err != nil {
		return err
	}
	if _, err := e.ready.Write([]byte{1}); err != nil {
		return fmt.Errorf("releasing the sandbox: %w", err)
	}
	return nil
}

// stop ends slirp4netns and closes the handshake.
func (e *egress) stop() {
	for _, f := range append(e.child, e.inNS, e.ready) {
		f.Close()
	}
	if e.slirp != nil && e.slirp.Process != nil {
		e.slirp.Process.Kill()
		e.slirp.Wait()
	}
}

// refused lists the destinations no build may reach: link-local (cloud
// metadata services), slirp4netns's door to the host, and every address
// of the gateway's own host, where its API and local services listen.
func refused() []string {
	dst := []string{"169.254.0.0/16", slirpGateway + "/32"}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() {
			// IPv6 is not routed into the sandbox; loopback is its own.
			continue
		}
		dst = append(dst, ipn.IP.String()+"/32")
	}
	return dst
}

// refuse installs REJECT rules for dsts in the network namespace of pid.
// The sandbox itself cannot change them: it has no CAP_NET_ADMIN.
func (r *Runner) refuse(ctx context.Context, pid int, dsts []string) error {
	var rules strings.Builder
	rules.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, d := range dsts {
		fmt.Fprintf(&rules, "-A OUTPUT -d %s -j REJECT --reject-with icmp-net-prohibited\n", d)
	}
	rules.WriteString("COMMIT\n")
	args := []string{"--target", strconv.Itoa(pid), "--net"}
	if os.Geteuid() != 0 {
		// A gateway that is not root owns the sandbox's user namespace.
		args = append(args, "--user", "--preserve-credentials")
	}
	cmd := exec.CommandContext(ctx, r.o.nsenter, append(args, "--", r.o.iptables+"-restore")...)
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("installing the sandbox's network rules: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

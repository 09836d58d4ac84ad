// Package egress gives a sandbox's network namespace outbound connections
// through user-mode networking (slirp4netns), without a way back to the
// gateway's host: slirp4netns runs with --disable-host-loopback, and
// REJECT rules inside the namespace refuse link-local addresses (cloud
// metadata services), slirp4netns's door to the host and every address of
// the host itself. Both runners use it: kaniko for its sandbox, dind for
// the job's daemon, whose RUN containers share its namespace.
//
// The rules hold only at the IP layer of the namespace: slirp4netns
// connects, from the gateway's host network namespace, wherever the frames
// it receives on tap0 say, so a process that could write frames of its own
// (an AF_PACKET or raw socket) would reach the host's loopback and the
// metadata address past them. No build process can: the kaniko sandbox
// drops CAP_NET_RAW and refuses such sockets with seccomp, and the dind
// runner's containers run under a seccomp profile that refuses them.
// slirp4netns's own hardening does not close this door and is no
// substitute: --enable-sandbox and --enable-seccomp confine slirp4netns
// itself (used here against a compromised slirp4netns), and
// --outbound-addr only picks the source address of its connections,
// which still reach 127.0.0.1.
package egress

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses slirp4netns gives the namespace (--configure).
const (
	// Gateway is the host as slirp4netns shows it to the namespace; with
	// --disable-host-loopback it leads nowhere, and it is refused anyway.
	Gateway = "10.0.2.2"
	// DNS is slirp4netns's DNS forwarder.
	DNS = "10.0.2.3"
)

// Tools are the programs egress runs, by path or name on PATH.
type Tools struct {
	Slirp4netns string
	Nsenter     string
	// Iptables is the iptables binary; Iptables+"-restore" is run.
	Iptables string
}

// DefaultTools finds every tool on PATH.
func DefaultTools() Tools {
	return Tools{Slirp4netns: "slirp4netns", Nsenter: "nsenter", Iptables: "iptables"}
}

// Check reports a missing tool.
func (t Tools) Check() error {
	for _, b := range []string{t.Slirp4netns, t.Nsenter, t.Iptables + "-restore"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s, needed for network egress, not found (packages slirp4netns, util-linux, iptables): %w", b, err)
		}
	}
	return nil
}

// Network is the user-mode network of one namespace.
type Network struct {
	slirp *exec.Cmd
	log   bytes.Buffer
}

// Start connects the network namespace of pid to the outside through
// slirp4netns (interface tap0, 10.0.2.100/24, DNS at DNS) and refuses
// Refused() and refuse (ParseRefuse's result) in it. The namespace's
// processes must not hold CAP_NET_ADMIN in it, or they could lift the
// rules. Stop ends the network.
//
// slirp4netns runs as the caller's user in the caller's network
// namespace; it confines itself (--enable-sandbox, --enable-seccomp). A
// caller that is not root reaches the namespace through its user
// namespace, which it must own.
func Start(ctx context.Context, t Tools, pid int, refuse []string) (*Network, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	args := []string{"--configure", "--mtu=65520", "--disable-host-loopback",
		"--enable-sandbox", "--enable-seccomp", "--ready-fd=3"}
	if os.Geteuid() != 0 {
		args = append(args, "--userns-path=/proc/"+strconv.Itoa(pid)+"/ns/user")
	}
	n := &Network{}
	n.slirp = exec.Command(t.Slirp4netns, append(args, strconv.Itoa(pid), "tap0")...)
	n.slirp.ExtraFiles = []*os.File{readyW}
	n.slirp.Stdout, n.slirp.Stderr = &n.log, &n.log
	n.slirp.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.slirp.Start(); err != nil {
		readyW.Close()
		return nil, fmt.Errorf("starting slirp4netns: %w", err)
	}
	readyW.Close()
	readyR.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := readyR.Read(make([]byte, 1)); err != nil {
		n.Stop()
		return nil, fmt.Errorf("slirp4netns did not configure the network: %v: %s", err, strings.TrimSpace(n.log.String()))
	}
	if err := Refuse(ctx, t, pid, append(Refused(), refuse...)); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

// Stop ends slirp4netns.
func (n *Network) Stop() {
	if n != nil && n.slirp != nil && n.slirp.Process != nil {
		n.slirp.Process.Kill()
		n.slirp.Wait()
		n.slirp = nil
	}
}

// Refused lists the destinations no build may reach: link-local (cloud
// metadata services), slirp4netns's door to the host, and every address
// of the gateway's own host, where its API and local services listen.
func Refused() []string {
	dst := []string{"169.254.0.0/16", Gateway + "/32"}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() {
			// IPv6 is not routed into the namespace; loopback is its own.
			continue
		}
		dst = append(dst, ipn.IP.String()+"/32")
	}
	return dst
}

// ParseRefuse checks a list of IPv4 networks (CIDR) or addresses that
// builds must not reach on top of Refused(), the operator's own (internal
// networks, say), and returns them in CIDR form. IPv6 is refused: the
// namespace has no IPv6 route at all.
func ParseRefuse(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("refused destination %q is neither an IPv4 address nor a network in CIDR form", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("refused destination %q: IPv6 never leaves the sandbox, only IPv4 needs refusing", s)
		}
		out = append(out, p.Masked().String())
	}
	return out, nil
}

// Refuse installs REJECT rules for dsts in the network namespace of pid.
func Refuse(ctx context.Context, t Tools, pid int, dsts []string) error {
	var rules strings.Builder
	rules.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, d := range dsts {
		fmt.Fprintf(&rules, "-A OUTPUT -d %s -j REJECT --reject-with icmp-net-prohibited\n", d)
	}
	rules.WriteString("COMMIT\n")
	args := []string{"--target", strconv.Itoa(pid), "--net"}
	if os.Geteuid() != 0 {
		// A caller that is not root owns the namespace's user namespace.
		args = append(args, "--user", "--preserve-credentials")
	}
	cmd := exec.CommandContext(ctx, t.Nsenter, append(args, "--", t.Iptables+"-restore")...)
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("installing the sandbox's network rules: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// LoopbackUp brings up the loopback interface of the calling thread's
// network namespace: a new namespace starts with it down.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

package sandboxinit

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Hostname is the host name of every sandbox (its own UTS namespace), so
// that no build learns the gateway host's.
const Hostname = "buildgw"

// harden takes from the sandbox what no build step may have: the host's
// name (the runner gives the sandbox its own UTS namespace), the
// gateway's session keyring and OOM score, CAP_NET_RAW, and the system calls the
// seccomp filter refuses. It must run on the thread that then execs
// kaniko: capabilities and keyrings are per thread.
func harden() error {
	if err := unix.Sethostname([]byte(Hostname)); err != nil {
		return fmt.Errorf("setting the host name: %w", err)
	}
	if err := newSessionKeyring(); err != nil {
		return err
	}
	// The sandbox inherits the gateway's OOM score adjustment, which an
	// operator may have lowered to protect the gateway (systemd's
	// OOMScoreAdjust=): a build would then be the last process the kernel
	// kills when the host runs out of memory. It is the first instead.
	// Raising it needs no privilege; nothing in the sandbox can lower it.
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0); err != nil {
		return fmt.Errorf("raising the sandbox's OOM score: %w", err)
	}
	if err := dropNetRaw(); err != nil {
		return err
	}
	return installFilter()
}

// newSessionKeyring replaces the session keyring the sandbox inherited
// from the gateway's thread with a new, empty, anonymous one, as runc does
// for a container. Whoever possesses a session keyring reads its keys,
// whatever its uid or user namespace, and every build step would have
// possessed the gateway's.
func newSessionKeyring() error {
	// A NULL name makes an anonymous keyring; unix.KeyctlJoinSessionKeyring
	// cannot pass one.
	_, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	switch errno {
	case 0:
		return nil
	case unix.EPERM, unix.ENOSYS:
		// A seccomp profile above the sandbox (Docker's or containerd's
		// default, when the gateway or the Pod runs in a container)
		// refuses keyctl: then so it does for every build step, which
		// reaches no keyring either.
		return nil
	}
	return fmt.Errorf("joining a new session keyring: %w", errno)
}

// dropNetRaw removes CAP_NET_RAW from every capability set of the calling
// thread, the bounding set included, so that neither kaniko nor any
// program it starts (setuid or not) can hold it: no packet sockets, no raw
// IP sockets.
func dropNetRaw() error {
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_NET_RAW, 0, 0, 0); err != nil {
		return fmt.Errorf("dropping CAP_NET_RAW from the bounding set: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_LOWER, unix.CAP_NET_RAW, 0, 0); err != nil {
		return fmt.Errorf("dropping CAP_NET_RAW from the ambient set: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	bit := uint32(1) << (unix.CAP_NET_RAW % 32)
	d := &data[unix.CAP_NET_RAW/32]
	d.Effective &^= bit
	d.Permitted &^= bit
	d.Inheritable &^= bit
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("dropping CAP_NET_RAW: %w", err)
	}
	return nil
}

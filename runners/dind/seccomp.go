package dind

import (
	"encoding/json"
	"slices"

	"github.com/docker/docker/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// seccompProfile returns the seccomp profile of a job daemon's containers
// (dockerd --seccomp-profile): Docker's default, of the moby version this
// module pins, with socket() narrowed to the families and types builds
// need, so that no RUN step can make packets of its own. Its containers
// hold CAP_NET_RAW (Docker's default capabilities; docker build has no
// --cap-drop), and a hand-made frame goes past the IP-layer rules that
// keep egress from the gateway's host: slirp4netns connects from the
// host's network namespace, so a TCP connection made of frames to
// 127.0.0.1 reaches the host's loopback.
//
// What changes from Docker's default:
//   - socket() is allowed only for AF_UNIX and AF_NETLINK (any type; ip(8)
//     needs netlink) and for AF_INET and AF_INET6 with type & 0xf
//     SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET; everything else (AF_PACKET,
//     SOCK_RAW, SOCK_PACKET, AF_VSOCK, AF_ALG, ...) fails with EPERM, the
//     profile's default;
//   - socketcall() (32-bit x86), whose arguments seccomp cannot see, is
//     refused;
//   - io_uring_setup, io_uring_enter and io_uring_register, which open
//     sockets past seccomp, are refused (moby already leaves them out).
func seccompProfile() ([]byte, error) {
	p := seccomp.DefaultProfile()
	refused := []string{"socket", "socketcall", "io_uring_setup", "io_uring_enter", "io_uring_register"}
	var rules []*seccomp.Syscall
	for _, s := range p.Syscalls {
		s.Names = slices.DeleteFunc(slices.Clone(s.Names), func(n string) bool { return slices.Contains(refused, n) })
		if s.Name != "" && slices.Contains(refused, s.Name) {
			s.Name = ""
		}
		if len(s.Names) > 0 || s.Name != "" {
			rules = append(rules, s)
		}
	}
	allow := func(args ...specs.LinuxSeccompArg) *seccomp.Syscall {
		return &seccomp.Syscall{LinuxSyscall: specs.LinuxSyscall{
			Names: []string{"socket"}, Action: specs.ActAllow, Args: args,
		}}
	}
	family := func(f uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: 0, Value: f, Op: specs.OpEqualTo}
	}
	for _, f := range []uint64{unix.AF_UNIX, unix.AF_NETLINK} {
		rules = append(rules, allow(family(f)))
	}
	for _, f := range []uint64{unix.AF_INET, unix.AF_INET6} {
		for _, t := range []uint64{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
			rules = append(rules, allow(family(f),
				specs.LinuxSeccompArg{Index: 1, Value: 0xf, ValueTwo: t, Op: specs.OpMaskedEqual}))
		}
	}
	p.Syscalls = rules
	return json.MarshalIndent(p, "", "\t")
}

// Package sockfilter is the seccomp filter that every build sandbox runs
// under, so that no RUN step can make packets of its own: a step that
// could build its own frames would go past the IP-layer rules that keep
// egress from the gateway's host (slirp4netns connects from the host's
// network namespace, so a hand-made TCP connection to 127.0.0.1 reaches
// the host's loopback). The kaniko runner's sandbox init installs it on
// itself (behind dropping CAP_NET_RAW), with DenyMounts, once its root is
// laid out; the dind runner on the thread that starts a job's daemon, so
// that the daemon and everything it starts (containerd, runc, every RUN
// step's container, whichever builder made it) inherit it.
//
// The filter refuses, with EPERM:
//   - socket() of family AF_PACKET, and of type SOCK_RAW or SOCK_PACKET
//     (type & 0xf, so SOCK_CLOEXEC and SOCK_NONBLOCK change nothing) in any
//     family but AF_NETLINK, which ip(8) and the like need;
//   - io_uring_setup, io_uring_enter and io_uring_register: io_uring
//     opens sockets without the socket() system call;
//   - for the compat ABI (i386 on x86_64, arm on arm64), the same socket()
//     checks and socketcall() whole, whose arguments are behind a pointer
//     seccomp cannot follow;
//   - on x86_64, the whole x32 ABI (ENOSYS, as a kernel without it), and
//     any other architecture (ENOSYS);
//   - with DenyMounts, in both ABIs, every system call that mounts,
//     unmounts or changes a mount: mount, umount2 (and i386's umount),
//     mount_setattr, open_tree, move_mount, fsopen, fsconfig, fsmount,
//     fspick and pivot_root. A sandbox that lays out its root in a user
//     and mount namespace of its own stays root there: its read-only
//     binds are not locked, and a remount would make them writable.
//     Docker's and BuildKit's RUN steps may not mount (no CAP_SYS_ADMIN);
//     the dind runner's daemon must (InstallThread allows mounts).
//     unshare and clone stay allowed: a namespace made under the filter
//     inherits it, and mounts nothing either.
//
// It is installed without no_new_privs, which takes CAP_SYS_ADMIN (root
// of the sandbox's user namespace, or the root gateway's), so setuid
// programs in RUN steps keep working; seccomp filters are inherited and
// cannot be removed, so no descendant escapes it.
package sockfilter

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// abi is what the filter needs to know of the machine's system calls.
type abi struct {
	native, compat uint32 // AUDIT_ARCH_* values
	x32            bool   // native numbers with bit 30 set are x32's
	socket         uint32
	ioUring        []uint32
	// For the compat ABI; 0 if it has none.
	compatSocket, compatSocketcall uint32
	compatIOUring                  []uint32
	// The mount family (see DenyMounts), native and compat.
	mount, compatMount []uint32
}

// Mounts says whether the filter also refuses the mount family.
type Mounts bool

const (
	// AllowMounts leaves mounts to capabilities and namespaces: for the
	// dind runner's daemon, containerd and runc, which mount every
	// container's root.
	AllowMounts Mounts = false
	// DenyMounts refuses them with EPERM: for a sandbox that has laid out
	// its root, so that nothing in it can undo its read-only binds.
	DenyMounts Mounts = true
)

// Offsets in struct seccomp_data; arguments are 64-bit, and the low half
// of a little-endian argument is its first 4 bytes: all the kernel reads
// of an int argument.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg1 = 24
)

const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	x32Bit    = 0x40000000
)

// op is an instruction whose jumps name labels; asm resolves them.
type op struct {
	label  string // this instruction's label, if any
	inst   bpf.Instruction
	jt, jf string // for a JumpIf: where to go if true, if false ("" is the next)
}

// filter returns the program for a.
func (a abi) filter(m Mounts) ([]bpf.RawInstruction, error) {
	ret := func(v uint32) bpf.Instruction { return bpf.RetConstant{Val: v} }
	ld := func(off uint32) bpf.Instruction { return bpf.LoadAbsolute{Off: off, Size: 4} }
	eq := func(v uint32, jt, jf string) op {
		return op{inst: bpf.JumpIf{Cond: bpf.JumpEqual, Val: v}, jt: jt, jf: jf}
	}
	p := []op{
		{inst: ld(offArch)},
		eq(a.native, "native", ""),
	}
	if a.compat != 0 {
		p = append(p, eq(a.compat, "compat", ""))
	}
	p = append(p, op{inst: ret(retENOSYS)}, op{label: "native", inst: ld(offNr)})
	if a.x32 {
		p = append(p, op{inst: bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: x32Bit}, jt: "enosys"})
	}
	p = append(p, eq(a.socket, "socket", ""))
	for _, nr := range a.ioUring {
		p = append(p, eq(nr, "eperm", ""))
	}
	if m == DenyMounts {
		for _, nr := range a.mount {
			p = append(p, eq(nr, "eperm", ""))
		}
	}
	p = append(p, op{inst: ret(retAllow)})
	if a.compat != 0 {
		p = append(p, op{label: "compat", inst: ld(offNr)})
		if a.compatSocketcall != 0 {
			p = append(p, eq(a.compatSocketcall, "eperm", ""))
		}
		if a.compatSocket != 0 {
			p = append(p, eq(a.compatSocket, "socket", ""))
		}
		for _, nr := range a.compatIOUring {
			p = append(p, eq(nr, "eperm", ""))
		}
		if m == DenyMounts {
			for _, nr := range a.compatMount {
				p = append(p, eq(nr, "eperm", ""))
			}
		}
		p = append(p, op{inst: ret(retAllow)})
	}
	p = append(p,
		op{label: "socket", inst: ld(offArg0)},
		eq(unix.AF_PACKET, "eperm", ""),
		eq(unix.AF_NETLINK, "allow", ""),
		op{inst: ld(offArg1)},
		op{inst: bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf}},
		eq(unix.SOCK_RAW, "eperm", ""),
		eq(unix.SOCK_PACKET, "eperm", ""),
		op{label: "allow", inst: ret(retAllow)},
		op{label: "eperm", inst: ret(retEPERM)},
		op{label: "enosys", inst: ret(retENOSYS)},
	)
	return asm(p)
}

// asm resolves p's labels into jump offsets and assembles it.
func asm(p []op) ([]bpf.RawInstruction, error) {
	at := map[string]int{}
	for i, o := range p {
		if o.label != "" {
			at[o.label] = i
		}
	}
	skip := func(i int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		j, ok := at[label]
		if !ok || j <= i || j-i-1 > 255 {
			return 0, fmt.Errorf("seccomp filter: bad jump from %d to %q", i, label)
		}
		return uint8(j - i - 1), nil
	}
	insts := make([]bpf.Instruction, len(p))
	for i, o := range p {
		insts[i] = o.inst
		if j, ok := o.inst.(bpf.JumpIf); ok {
			var err error
			if j.SkipTrue, err = skip(i, o.jt); err != nil {
				return nil, err
			}
			if j.SkipFalse, err = skip(i, o.jf); err != nil {
				return nil, err
			}
			insts[i] = j
		}
	}
	return bpf.Assemble(insts)
}

// Install installs the filter on every thread of the calling process.
func Install(m Mounts) error {
	return install(m, unix.SECCOMP_FILTER_FLAG_TSYNC)
}

// InstallThread installs the filter on the calling thread only, which
// every process it starts afterwards inherits. The caller locks the
// goroutine to its thread (runtime.LockOSThread) while it starts what
// must run under the filter. It may unlock it afterwards, and should: a
// thread that ends with a locked goroutine sends the Pdeathsig of every
// process it ever started, and the filter refuses nothing a Go program
// needs. It allows mounts (AllowMounts): the thread goes back to the
// gateway, which mounts (memory workspaces), and so does what it starts.
func InstallThread() error {
	return install(AllowMounts, 0)
}

// Program is the filter for this machine, for tests.
func Program(m Mounts) ([]bpf.RawInstruction, error) {
	if sandboxABI.native == 0 {
		return nil, fmt.Errorf("no seccomp filter for this architecture")
	}
	return sandboxABI.filter(m)
}

func install(m Mounts, flags uintptr) error {
	raw, err := Program(m)
	if err != nil {
		return err
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("installing the seccomp filter: %w", errno)
	}
	return nil
}

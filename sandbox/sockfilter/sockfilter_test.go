package sockfilter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// TestFilter runs the x86_64 filter in x/net/bpf's interpreter over
// seccomp_data records, with and without DenyMounts. The interpreter
// loads words big-endian where the kernel loads them in the machine's
// order, so the records are written big-endian here: what is checked is
// the filter's logic.
func TestFilter(t *testing.T) {
	a := abi{
		native: unix.AUDIT_ARCH_X86_64, compat: unix.AUDIT_ARCH_I386, x32: true,
		socket: 41, ioUring: []uint32{425, 426, 427},
		compatSocket: 359, compatSocketcall: 102, compatIOUring: []uint32{425, 426, 427},
		mount:       []uint32{165, 166, 155, 442, 428, 429, 430, 431, 432, 433},
		compatMount: []uint32{21, 22, 52, 217, 442, 428, 429, 430, 431, 432, 433},
	}
	const (
		x86_64 = unix.AUDIT_ARCH_X86_64
		i386   = unix.AUDIT_ARCH_I386
	)
	tests := []struct {
		name        string
		arch, nr    uint32
		family, typ uint32
		want        uint32
	}{
		{"read", x86_64, 0, 0, 0, retAllow},
		{"AF_INET SOCK_STREAM", x86_64, 41, unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, retAllow},
		{"AF_INET6 SOCK_DGRAM", x86_64, 41, unix.AF_INET6, unix.SOCK_DGRAM, retAllow},
		{"AF_UNIX SOCK_SEQPACKET", x86_64, 41, unix.AF_UNIX, unix.SOCK_SEQPACKET, retAllow},
		{"AF_NETLINK SOCK_RAW", x86_64, 41, unix.AF_NETLINK, unix.SOCK_RAW | unix.SOCK_CLOEXEC, retAllow},
		{"AF_PACKET SOCK_RAW", x86_64, 41, unix.AF_PACKET, unix.SOCK_RAW, retEPERM},
		{"AF_PACKET SOCK_DGRAM", x86_64, 41, unix.AF_PACKET, unix.SOCK_DGRAM, retEPERM},
		{"AF_INET SOCK_RAW", x86_64, 41, unix.AF_INET, unix.SOCK_RAW, retEPERM},
		{"AF_INET SOCK_RAW|SOCK_NONBLOCK", x86_64, 41, unix.AF_INET, unix.SOCK_RAW | unix.SOCK_NONBLOCK, retEPERM},
		{"AF_INET6 SOCK_RAW", x86_64, 41, unix.AF_INET6, unix.SOCK_RAW, retEPERM},
		{"AF_INET SOCK_PACKET", x86_64, 41, unix.AF_INET, unix.SOCK_PACKET, retEPERM},
		{"io_uring_setup", x86_64, 425, 0, 0, retEPERM},
		{"io_uring_enter", x86_64, 426, 0, 0, retEPERM},
		{"io_uring_register", x86_64, 427, 0, 0, retEPERM},
		{"x32 socket", x86_64, x32Bit | 41, unix.AF_INET, unix.SOCK_STREAM, retENOSYS},
		{"x32 read", x86_64, x32Bit, 0, 0, retENOSYS},
		{"i386 read", i386, 3, 0, 0, retAllow},
		{"i386 socket AF_INET SOCK_STREAM", i386, 359, unix.AF_INET, unix.SOCK_STREAM, retAllow},
		{"i386 socket AF_PACKET", i386, 359, unix.AF_PACKET, unix.SOCK_RAW, retEPERM},
		{"i386 socket AF_INET SOCK_RAW", i386, 359, unix.AF_INET, unix.SOCK_RAW, retEPERM},
		{"i386 socketcall", i386, 102, 1, 0, retEPERM},
		{"i386 io_uring_setup", i386, 425, 0, 0, retEPERM},
		{"other architecture", unix.AUDIT_ARCH_AARCH64, 0, 0, 0, retENOSYS},
		{"x32 mount", x86_64, x32Bit | 165, 0, 0, retENOSYS},
	}
	// The mount family: allowed by AllowMounts, refused by DenyMounts.
	mounts := []struct {
		name     string
		arch, nr uint32
	}{
		{"mount", x86_64, 165},
		{"umount2", x86_64, 166},
		{"pivot_root", x86_64, 155},
		{"mount_setattr", x86_64, 442},
		{"open_tree", x86_64, 428},
		{"move_mount", x86_64, 429},
		{"fsopen", x86_64, 430},
		{"fsconfig", x86_64, 431},
		{"fsmount", x86_64, 432},
		{"fspick", x86_64, 433},
		{"i386 mount", i386, 21},
		{"i386 umount", i386, 22},
		{"i386 umount2", i386, 52},
		{"i386 pivot_root", i386, 217},
		{"i386 mount_setattr", i386, 442},
		{"i386 open_tree", i386, 428},
		{"i386 fspick", i386, 433},
	}
	for _, m := range []Mounts{AllowMounts, DenyMounts} {
		mode := map[Mounts]string{AllowMounts: "AllowMounts", DenyMounts: "DenyMounts"}[m]
		raw, err := a.filter(m)
		if err != nil {
			t.Fatal(err)
		}
		insts, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatal("the filter does not disassemble")
		}
		vm, err := bpf.NewVM(insts)
		if err != nil {
			t.Fatal(err)
		}
		run := func(name string, arch, nr, family, typ, want uint32) {
			d := make([]byte, 64)
			binary.BigEndian.PutUint32(d[offNr:], nr)
			binary.BigEndian.PutUint32(d[offArch:], arch)
			binary.BigEndian.PutUint32(d[offArg0:], family)
			binary.BigEndian.PutUint32(d[offArg1:], typ)
			got, err := vm.Run(d)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if uint32(got) != want {
				t.Errorf("filter(%s)(%s) = %#x, want %#x", mode, name, got, want)
			}
		}
		for _, tc := range tests {
			run(tc.name, tc.arch, tc.nr, tc.family, tc.typ, tc.want)
		}
		for _, tc := range mounts {
			want := uint32(retAllow)
			if m == DenyMounts {
				want = retEPERM
			}
			run(tc.name, tc.arch, tc.nr, 0, 0, want)
		}
	}
}

// TestInstallThread installs the filter on one locked thread: that thread,
// and a process it starts, are refused a packet socket, while the rest of
// the process is not.
func TestInstallThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestInstallThread runs as root: a filter without no_new_privs takes CAP_SYS_ADMIN")
	}
	type result struct {
		sockErr error
		status  string
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the filtered thread ends with the goroutine,
		// so that the checks below never run on it.
		runtime.LockOSThread()
		var r result
		if r.err = InstallThread(); r.err != nil {
			ch <- r
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err == nil {
			unix.Close(fd)
		}
		r.sockErr = err
		out, err := exec.Command("grep", "^Seccomp:", "/proc/self/status").Output()
		r.status, r.err = strings.TrimSpace(string(out)), err
		ch <- r
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !errors.Is(r.sockErr, unix.EPERM) {
		t.Errorf("socket(AF_PACKET, SOCK_RAW) on the filtered thread = %v, want EPERM", r.sockErr)
	}
	if want := "Seccomp:\t2"; r.status != want {
		t.Errorf("a child of the filtered thread has %q, want %q (filter mode)", r.status, want)
	}
	// Other threads are not filtered.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Errorf("socket(AF_PACKET, SOCK_RAW) on another thread = %v, want a socket", err)
	} else {
		unix.Close(fd)
	}
}

// TestDenyMounts installs the filter with DenyMounts on one locked thread,
// in a mount namespace of its own: a tmpfs that the thread could mount
// before, it may not mount after, nor unmount, nor clone a tree.
func TestDenyMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestDenyMounts runs as root: a filter without no_new_privs takes CAP_SYS_ADMIN")
	}
	dir := t.TempDir()
	type result struct {
		before, mount, umount, openTree error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, its namespace and its filter end
		// with the goroutine.
		runtime.LockOSThread()
		var r result
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			r.before = fmt.Errorf("unshare: %w", err)
			ch <- r
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			r.before = fmt.Errorf("making mounts private: %w", err)
			ch <- r
			return
		}
		// Without the filter, the mount works: what fails below fails
		// for the filter.
		if r.before = unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); r.before != nil {
			ch <- r
			return
		}
		if err := install(DenyMounts, 0); err != nil {
			r.before = err
			ch <- r
			return
		}
		r.mount = unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m")
		r.umount = unix.Unmount(dir, unix.MNT_DETACH)
		fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
		r.openTree = err
		ch <- r
	}()
	r := <-ch
	if r.before != nil {
		t.Fatalf("before the filter: %v", r.before)
	}
	for _, c := range []struct {
		call string
		err  error
	}{{"mount", r.mount}, {"umount2", r.umount}, {"open_tree", r.openTree}} {
		if !errors.Is(c.err, unix.EPERM) {
			t.Errorf("%s under DenyMounts = %v, want EPERM", c.call, c.err)
		}
	}
}

package sockfilter

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// TestFilter runs the x86_64 filter in x/net/bpf's interpreter over
// seccomp_data records. The interpreter loads words big-endian where the
// kernel loads them in the machine's order, so the records are written
// big-endian here: what is checked is the filter's logic.
func TestFilter(t *testing.T) {
	a := abi{
		native: unix.AUDIT_ARCH_X86_64, compat: unix.AUDIT_ARCH_I386, x32: true,
		socket: 41, ioUring: []uint32{425, 426, 427},
		compatSocket: 359, compatSocketcall: 102, compatIOUring: []uint32{425, 426, 427},
	}
	raw, err := a.filter()
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
	}
	for _, tc := range tests {
		d := make([]byte, 64)
		binary.BigEndian.PutUint32(d[offNr:], tc.nr)
		binary.BigEndian.PutUint32(d[offArch:], tc.arch)
		binary.BigEndian.PutUint32(d[offArg0:], tc.family)
		binary.BigEndian.PutUint32(d[offArg1:], tc.typ)
		got, err := vm.Run(d)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if uint32(got) != tc.want {
			t.Errorf("filter(%s) = %#x, want %#x", tc.name, got, tc.want)
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

package sockfilter

import "golang.org/x/sys/unix"

// sandboxABI: x86_64, with i386 as its compat ABI and x32 refused.
var sandboxABI = abi{
	native:           unix.AUDIT_ARCH_X86_64,
	compat:           unix.AUDIT_ARCH_I386,
	x32:              true,
	socket:           unix.SYS_SOCKET,
	ioUring:          []uint32{unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER},
	compatSocket:     359, // i386 socket
	compatSocketcall: 102, // i386 socketcall
	compatIOUring:    []uint32{425, 426, 427},
}

package sockfilter

import "golang.org/x/sys/unix"

// sandboxABI: arm64, with 32-bit arm as its compat ABI (which has no
// socketcall).
var sandboxABI = abi{
	native:        unix.AUDIT_ARCH_AARCH64,
	compat:        unix.AUDIT_ARCH_ARM,
	socket:        unix.SYS_SOCKET,
	ioUring:       []uint32{unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER},
	compatSocket:  281, // arm socket
	compatIOUring: []uint32{425, 426, 427},
}

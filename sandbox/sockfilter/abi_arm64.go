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
	mount: []uint32{unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_MOUNT_SETATTR,
		unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK},
	// arm (EABI, which has no umount) mount, umount2, pivot_root,
	// mount_setattr, open_tree, move_mount, fsopen, fsconfig, fsmount,
	// fspick.
	compatMount: []uint32{21, 52, 218, 442, 428, 429, 430, 431, 432, 433},
}

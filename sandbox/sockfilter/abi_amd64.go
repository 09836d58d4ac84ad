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
	mount: []uint32{unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_MOUNT_SETATTR,
		unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK},
	// i386 mount, umount, umount2, pivot_root, mount_setattr, open_tree,
	// move_mount, fsopen, fsconfig, fsmount, fspick.
	compatMount: []uint32{21, 22, 52, 217, 442, 428, 429, 430, 431, 432, 433},
}

package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawIP opens an AF_INET raw socket with IP_HDRINCL, which can send IP
// packets of any source and content; it returns "allowed" or the error.
func rawIP() string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return "socket(AF_INET, SOCK_RAW): " + err.Error()
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
		return "IP_HDRINCL: " + err.Error()
	}
	return "allowed"
}

// socketCase is one family, type and protocol to try.
type socketCase struct {
	name        string
	family, typ int
	proto       int
}

var socketCases = []socketCase{
	{"AF_PACKET SOCK_RAW", unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL))},
	{"AF_PACKET SOCK_DGRAM", unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP))},
	{"AF_PACKET SOCK_PACKET", unix.AF_PACKET, unix.SOCK_PACKET, int(htons(unix.ETH_P_ALL))},
	{"AF_INET SOCK_PACKET", unix.AF_INET, unix.SOCK_PACKET, int(htons(unix.ETH_P_ALL))},
	{"AF_INET SOCK_RAW", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP},
	{"AF_INET SOCK_RAW|SOCK_CLOEXEC", unix.AF_INET, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP},
	{"AF_INET6 SOCK_RAW", unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW},
	{"AF_INET SOCK_STREAM", unix.AF_INET, unix.SOCK_STREAM, 0},
	{"AF_INET SOCK_DGRAM", unix.AF_INET, unix.SOCK_DGRAM, 0},
	{"AF_UNIX SOCK_STREAM", unix.AF_UNIX, unix.SOCK_STREAM, 0},
	{"AF_NETLINK SOCK_RAW", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE},
}

// trySockets opens a socket of each case and returns "socket NAME: allowed"
// or "socket NAME: ERROR" for each.
func trySockets() []string {
	var out []string
	for _, c := range socketCases {
		fd, err := unix.Socket(c.family, c.typ, c.proto)
		res := "allowed"
		if err != nil {
			res = err.Error()
		} else {
			unix.Close(fd)
		}
		out = append(out, fmt.Sprintf("socket %s: %s", c.name, res))
	}
	// io_uring can open sockets where seccomp does not look.
	params := make([]byte, 120) // struct io_uring_params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	res := "allowed"
	if errno != 0 {
		res = errno.Error()
	} else {
		unix.Close(int(fd))
	}
	out = append(out, "io_uring_setup: "+res)
	return out
}

package socketaudit

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Constants of linux/unix_diag.h that x/sys/unix does not define.
const (
	udiagShowPeer = 0x4
	unixDiagPeer  = 2
)

// unixPeers returns, for every unix socket of this network namespace that
// has a peer, its inode and its peer's inode, from the kernel's sock_diag
// interface (what ss -x shows). It links a client's unnamed socket to the
// daemon's accepted one, which /proc/net/unix lists under the path.
func unixPeers() (map[uint32]uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening sock_diag: %w", err)
	}
	defer unix.Close(fd)

	// nlmsghdr, then unix_diag_req.
	req := make([]byte, 16+24)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	ne.PutUint32(req[20:], 0xffffffff) // every state
	ne.PutUint32(req[28:], udiagShowPeer)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("asking sock_diag: %w", err)
	}

	peers := map[uint32]uint32{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("reading sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("parsing sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return peers, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag refused the request")
			}
			// unix_diag_msg: family, type, state, pad, ino, cookie[2];
			// then attributes.
			if len(m.Data) < 16 {
				continue
			}
			ino := ne.Uint32(m.Data[4:])
			for attrs := m.Data[16:]; len(attrs) >= 4; {
				l := int(ne.Uint16(attrs[0:]))
				typ := ne.Uint16(attrs[2:])
				if l < 4 || l > len(attrs) {
					break
				}
				if typ == unixDiagPeer && l >= 8 {
					peers[ino] = ne.Uint32(attrs[4:])
				}
				step := (l + 3) &^ 3
				if step > len(attrs) {
					break
				}
				attrs = attrs[step:]
			}
		}
	}
}

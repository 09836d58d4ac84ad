package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// link is the sandbox's side of its default route, as a frame-level client
// needs it.
type link struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	ip      net.IP // our IPv4 address
	gw      net.IP // the default route's gateway
	gwMAC   net.HardwareAddr
}

// rawFetch fetches http://host:port/path with a TCP client of its own that
// sends and receives Ethernet frames on an AF_PACKET socket: the kernel's
// IP layer, and its firewall, never see the connection. It returns the
// response's body.
func rawFetch(host string, port uint16, path string) (string, error) {
	dst := net.ParseIP(host).To4()
	if dst == nil {
		return "", fmt.Errorf("%q is not an IPv4 address", host)
	}
	l, err := openLink()
	if err != nil {
		return "", err
	}
	defer unix.Close(l.fd)
	if err := l.arp(); err != nil {
		return "", err
	}
	req := fmt.Sprintf("GET %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", path, host, port)
	resp, err := l.tcpExchange(dst, port, []byte(req))
	if err != nil {
		return "", err
	}
	_, body, ok := bytes.Cut(resp, []byte("\r\n\r\n"))
	if !ok {
		return "", fmt.Errorf("malformed answer %q", resp)
	}
	return string(body), nil
}

func openLink() (*link, error) {
	ifname, gw, err := defaultRoute()
	if err != nil {
		return nil, err
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	l := &link{ifindex: ifc.Index, mac: ifc.HardwareAddr, gw: gw}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			l.ip = n.IP.To4()
			break
		}
	}
	if l.ip == nil || len(l.mac) != 6 {
		return nil, fmt.Errorf("interface %s has no IPv4 address or no MAC", ifname)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("socket(AF_PACKET): %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind(AF_PACKET): %w", err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l.fd = fd
	return l, nil
}

// defaultRoute reads the default route's interface and gateway from
// /proc/net/route.
func defaultRoute() (string, net.IP, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 || fs[1] != "00000000" {
			continue
		}
		v, err := strconv.ParseUint(fs[2], 16, 32)
		if err != nil {
			continue
		}
		gw := make(net.IP, 4)
		binary.LittleEndian.PutUint32(gw, uint32(v))
		return fs[0], gw, nil
	}
	return "", nil, errors.New("no default route")
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes one frame to dst with the given ethertype.
func (l *link) send(dst net.HardwareAddr, etype uint16, payload []byte) error {
	f := make([]byte, 14+len(payload))
	copy(f, dst)
	copy(f[6:], l.mac)
	binary.BigEndian.PutUint16(f[12:], etype)
	copy(f[14:], payload)
	sa := &unix.SockaddrLinklayer{Protocol: htons(etype), Ifindex: l.ifindex, Halen: 6}
	copy(sa.Addr[:], dst)
	return unix.Sendto(l.fd, f, 0, sa)
}

// recv returns the next incoming frame's ethertype and payload, or nil
// after the socket's receive timeout.
func (l *link) recv(buf []byte) (uint16, []byte) {
	for {
		n, from, err := unix.Recvfrom(l.fd, buf, 0)
		if err != nil {
			return 0, nil
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n < 14 {
			continue
		}
		return binary.BigEndian.Uint16(buf[12:]), buf[14:n]
	}
}

// arp finds the gateway's MAC address.
func (l *link) arp() error {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:], l.mac)
	copy(p[14:], l.ip)
	copy(p[24:], l.gw)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	buf := make([]byte, 1<<17)
	for try := 0; try < 5; try++ {
		if err := l.send(bcast, unix.ETH_P_ARP, p); err != nil {
			return fmt.Errorf("sending ARP request: %w", err)
		}
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			et, r := l.recv(buf)
			if et != unix.ETH_P_ARP || len(r) < 28 || binary.BigEndian.Uint16(r[6:]) != 2 || !net.IP(r[14:18]).Equal(l.gw) {
				continue
			}
			l.gwMAC = append(net.HardwareAddr{}, r[8:14]...)
			return nil
		}
	}
	return fmt.Errorf("no ARP answer from the gateway %s", l.gw)
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

type segment struct {
	seq, ack uint32
	flags    byte
	payload  []byte
}

// tcpExchange opens a connection to dst:port, sends req and returns all
// that the server sends until it closes the connection.
func (l *link) tcpExchange(dst net.IP, port uint16, req []byte) ([]byte, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	sport := 40000 + binary.BigEndian.Uint16(rnd[:2])%20000
	isn := binary.BigEndian.Uint32(rnd[2:])
	out := func(flags byte, seq, ack uint32, payload []byte) error {
		return l.send(l.gwMAC, unix.ETH_P_IP, ipv4TCP(l.ip, dst, sport, port, seq, ack, flags, payload))
	}
	buf := make([]byte, 1<<17)
	in := func() (*segment, bool) {
		et, p := l.recv(buf)
		if p == nil {
			return nil, false
		}
		if et != unix.ETH_P_IP {
			return nil, true
		}
		s := parseTCP(p, dst, port, sport)
		return s, true
	}

	// Handshake.
	var rcvNxt uint32
	established := false
	for try := 0; try < 4 && !established; try++ {
		if err := out(tcpSYN, isn, 0, nil); err != nil {
			return nil, fmt.Errorf("sending SYN: %w", err)
		}
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			s, _ := in()
			if s == nil {
				continue
			}
			if s.flags&tcpRST != 0 {
				return nil, errors.New("connection refused (RST)")
			}
			if s.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK && s.ack == isn+1 {
				rcvNxt = s.seq + 1
				established = true
				break
			}
		}
	}
	if !established {
		return nil, errors.New("no answer to SYN")
	}
	sndNxt := isn + 1
	if err := out(tcpACK, sndNxt, rcvNxt, nil); err != nil {
		return nil, err
	}
	if err := out(tcpPSH|tcpACK, sndNxt, rcvNxt, req); err != nil {
		return nil, err
	}
	var resp []byte
	acked := false
	lastSent := time.Now()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s, _ := in()
		if s == nil {
			if !acked && time.Since(lastSent) > time.Second {
				out(tcpPSH|tcpACK, sndNxt, rcvNxt, req)
				lastSent = time.Now()
			}
			continue
		}
		if s.flags&tcpRST != 0 {
			if len(resp) > 0 {
				return resp, nil
			}
			return nil, errors.New("connection reset")
		}
		if s.flags&tcpACK != 0 && s.ack == sndNxt+uint32(len(req)) {
			acked = true
		}
		if s.seq != rcvNxt {
			// Out of order or repeated: say again what we have.
			out(tcpACK, sndNxt+uint32(len(req)), rcvNxt, nil)
			continue
		}
		resp = append(resp, s.payload...)
		rcvNxt += uint32(len(s.payload))
		if s.flags&tcpFIN != 0 {
			rcvNxt++
			out(tcpFIN|tcpACK, sndNxt+uint32(len(req)), rcvNxt, nil)
			return resp, nil
		}
		if len(s.payload) > 0 {
			out(tcpACK, sndNxt+uint32(len(req)), rcvNxt, nil)
		}
	}
	if len(resp) > 0 {
		return resp, nil
	}
	return nil, errors.New("no answer to the request")
}

// parseTCP returns the TCP segment in the IPv4 packet p if it comes from
// src:sport to our dport, or nil.
func parseTCP(p []byte, src net.IP, sport, dport uint16) *segment {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP || !net.IP(p[12:16]).Equal(src) {
		return nil
	}
	ihl := int(p[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(p[2:]))
	if total > len(p) || ihl+20 > total {
		return nil
	}
	t := p[ihl:total]
	if binary.BigEndian.Uint16(t[0:]) != sport || binary.BigEndian.Uint16(t[2:]) != dport {
		return nil
	}
	off := int(t[12]>>4) * 4
	if off < 20 || off > len(t) {
		return nil
	}
	return &segment{
		seq:     binary.BigEndian.Uint32(t[4:]),
		ack:     binary.BigEndian.Uint32(t[8:]),
		flags:   t[13],
		payload: append([]byte(nil), t[off:]...),
	}
}

// ipv4TCP builds an IPv4 packet holding one TCP segment.
func ipv4TCP(src, dst net.IP, sport, dport uint16, seq, ack uint32, flags byte, payload []byte) []byte {
	t := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535) // window
	copy(t[20:], payload)
	pseudo := make([]byte, 12)
	copy(pseudo, src)
	copy(pseudo[4:], dst)
	pseudo[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(t)))
	binary.BigEndian.PutUint16(t[16:], checksum(append(pseudo, t...)))

	ip := make([]byte, 20, 20+len(t))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(t)))
	ip[6] = 0x40 // don't fragment
	ip[8] = 64   // TTL
	ip[9] = unix.IPPROTO_TCP
	copy(ip[12:], src)
	copy(ip[16:], dst)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, t...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

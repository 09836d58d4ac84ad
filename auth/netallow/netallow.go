// Package netallow restricts which client addresses may talk to the
// gateway at all: a network allow-list checked before authentication, as
// a second fence around the build API.
package netallow

import (
	"fmt"
	"net/netip"
	"strings"
)

// List is a set of allowed networks. A nil or empty List allows every
// address: an unconfigured allow-list must not lock everyone out.
type List struct {
	prefixes []netip.Prefix
}

// Parse returns the List of cidrs. Each entry is a CIDR ("10.0.0.0/8",
// "fd00::/8") or a single address ("192.0.2.7", "::1"), which allows that
// address only.
func Parse(cidrs []string) (*List, error) {
	l := &List{prefixes: make([]netip.Prefix, 0, len(cidrs))}
	for _, s := range cidrs {
		p, err := parseOne(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("parsing allowed network %q: %w", s, err)
		}
		l.prefixes = append(l.prefixes, p)
	}
	return l, nil
}

func parseOne(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty entry")
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zoned addresses are not supported")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	// Remote addresses are unmapped before matching (see Allows), so an
	// IPv4-mapped IPv6 prefix is turned into the IPv4 prefix it denotes.
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Allows reports whether remoteAddr, as in http.Request.RemoteAddr
// ("host:port") or a bare IP, is in the list. An address that cannot be
// parsed is refused, unless the list is empty.
func (l *List) Allows(remoteAddr string) bool {
	if l == nil || len(l.prefixes) == 0 {
		return true
	}
	a, ok := parseAddr(remoteAddr)
	if !ok {
		return false
	}
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func parseAddr(s string) (netip.Addr, bool) {
	var a netip.Addr
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a = ap.Addr()
	} else if a, err = netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err != nil {
		return netip.Addr{}, false
	}
	// A dual-stack listener may report IPv4 clients as ::ffff:a.b.c.d, and
	// Prefix.Contains never matches an address with a zone.
	return a.Unmap().WithZone(""), true
}

// String returns the networks, comma-separated, for logs.
func (l *List) String() string {
	if l == nil || len(l.prefixes) == 0 {
		return "any"
	}
	s := make([]string, len(l.prefixes))
	for i, p := range l.prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

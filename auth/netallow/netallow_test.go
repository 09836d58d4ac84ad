package netallow

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      []string
		want    string // String() of the list
		wantErr string // substring; "" means success
	}{
		{nil, "any", ""},
		{[]string{}, "any", ""},
		{[]string{"10.0.0.0/8"}, "10.0.0.0/8", ""},
		{[]string{"10.1.2.3/8"}, "10.0.0.0/8", ""}, // host bits are masked off
		{[]string{" 192.0.2.7 "}, "192.0.2.7/32", ""},
		{[]string{"::1"}, "::1/128", ""},
		{[]string{"fd00::/8", "127.0.0.0/8"}, "fd00::/8,127.0.0.0/8", ""},
		{[]string{"::ffff:10.0.0.0/104"}, "10.0.0.0/8", ""},
		{[]string{"::ffff:192.0.2.7"}, "192.0.2.7/32", ""},
		{[]string{"10.0.0.0/8", "garbage"}, "", `parsing allowed network "garbage"`},
		{[]string{"10.0.0.0/33"}, "", `parsing allowed network "10.0.0.0/33"`},
		{[]string{"10.0.0.300"}, "", `parsing allowed network "10.0.0.300"`},
		{[]string{"example.com"}, "", `parsing allowed network "example.com"`},
		{[]string{"10.0.0.1:80"}, "", `parsing allowed network "10.0.0.1:80"`},
		{[]string{""}, "", `parsing allowed network "": empty entry`},
		{[]string{"fe80::1%eth0"}, "", "zoned addresses are not supported"},
	}
	for _, tt := range tests {
		l, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want error containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) error = %v, want none", tt.in, err)
			continue
		}
		if got := l.String(); got != tt.want {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAllows(t *testing.T) {
	list := func(cidrs ...string) *List {
		l, err := Parse(cidrs)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	v4 := list("10.0.0.0/8", "192.0.2.7")
	v6 := list("::1", "2001:db8::/32")
	tests := []struct {
		name string
		l    *List
		addr string
		want bool
	}{
		{"nil list allows all", nil, "203.0.113.1:1234", true},
		{"empty list allows all", list(), "203.0.113.1:1234", true},
		{"empty list allows garbage", list(), "garbage", true},
		{"v4 in cidr with port", v4, "10.20.30.40:5555", true},
		{"v4 in cidr bare", v4, "10.20.30.40", true},
		{"v4 single address", v4, "192.0.2.7:80", true},
		{"v4 next to single address", v4, "192.0.2.8:80", false},
		{"v4 outside", v4, "11.0.0.1:80", false},
		{"v4-mapped v6 client", v4, "[::ffff:10.1.1.1]:443", true},
		{"v6 client vs v4 list", v4, "[2001:db8::1]:443", false},
		{"loopback v6 with port", v6, "[::1]:8443", true},
		{"loopback v6 bare", v6, "::1", true},
		{"loopback v6 bracketed", v6, "[::1]", true},
		{"v6 in cidr", v6, "[2001:db8:1::5]:1", true},
		{"v6 with zone", v6, "[2001:db8::5%eth0]:1", true},
		{"v6 outside", v6, "[2001:db9::1]:1", false},
		{"v4 loopback vs v6 list", v6, "127.0.0.1:80", false},
		{"garbage", v4, "garbage", false},
		{"empty", v4, "", false},
		{"hostname", v4, "localhost:80", false},
		{"unix socket", v4, "@", false},
	}
	for _, tt := range tests {
		if got := tt.l.Allows(tt.addr); got != tt.want {
			t.Errorf("%s: (%v).Allows(%q) = %v, want %v", tt.name, tt.l, tt.addr, got, tt.want)
		}
	}
}

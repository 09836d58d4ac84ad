package egress

import (
	"slices"
	"strings"
	"testing"
)

func TestRefused(t *testing.T) {
	got := Refused()
	for _, want := range []string{"169.254.0.0/16", Gateway + "/32"} {
		if !slices.Contains(got, want) {
			t.Errorf("Refused() = %q, want it to hold %s", got, want)
		}
	}
	for _, d := range got {
		// The namespace's loopback is its own; refusing it would break
		// builds that talk to themselves.
		if strings.HasPrefix(d, "127.") || strings.Contains(d, ":") {
			t.Errorf("Refused() = %q holds %s, want IPv4 non-loopback destinations only", got, d)
		}
	}
}

func TestParseRefuse(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: nil, want: []string{}},
		{in: []string{"10.0.0.0/8", "192.168.1.7", "172.16.5.9/12"}, want: []string{"10.0.0.0/8", "192.168.1.7/32", "172.16.0.0/12"}},
		{in: []string{"fd00::/8"}, wantErr: "IPv6"},
		{in: []string{"::1"}, wantErr: "IPv6"},
		{in: []string{"10.0.0.0/33"}, wantErr: `"10.0.0.0/33" is neither`},
		{in: []string{"intranet"}, wantErr: `"intranet" is neither`},
	}
	for _, tt := range tests {
		got, err := ParseRefuse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseRefuse(%q) = %q, %v, want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseRefuse(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

package egress

import (
	"slices"
	"strings"
	"testing"
)

func TestCheckMode(t *testing.T) {
	for mode, ok := range map[string]bool{None: true, Egress: true, "": false, "host": false, "bridge": false} {
		if err := CheckMode(mode); (err == nil) != ok {
			t.Errorf("CheckMode(%q) = %v, want ok %v", mode, err, ok)
		}
	}
}

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

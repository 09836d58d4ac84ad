package dind

import (
	"strings"
	"testing"
)

func TestStepDigests(t *testing.T) {
	const d = "sha256:d6fc4a2b43f13b7a14eab954d266f53ef89467a74dda7b027e83ce8ec0190bc9"
	for _, tc := range []struct{ in, want string }{
		{"#1 [internal] load build definition from Dockerfile\n#1 " + d + "\n#1 DONE 0.1s\n", "#1 [internal] load build definition from Dockerfile\n#1 DONE 0.1s\n"},
		{"#12 " + d + "\n", ""},
		{"#12 " + d, ""},
		// A step's output, with its time, stays.
		{"#5 0.416 " + d + "\n", "#5 0.416 " + d + "\n"},
		{"#5 " + d + " and more\n", "#5 " + d + " and more\n"},
		{"plain line\n", "plain line\n"},
	} {
		var b strings.Builder
		n, err := stepDigests{&b}.Write([]byte(tc.in))
		if err != nil || n != len(tc.in) {
			t.Errorf("Write(%q) = %d, %v; want %d, nil", tc.in, n, err, len(tc.in))
		}
		if b.String() != tc.want {
			t.Errorf("Write(%q) passed on %q, want %q", tc.in, b.String(), tc.want)
		}
	}
}

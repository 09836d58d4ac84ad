package sandboxinit

import (
	"slices"
	"testing"
)

func TestSpellings(t *testing.T) {
	tests := []struct {
		ref  string
		want []string
	}{
		{"index.docker.io/library/alpine:latest", []string{
			"index.docker.io/library/alpine:latest", "docker.io/library/alpine:latest", "library/alpine:latest", "alpine:latest",
			"index.docker.io/library/alpine", "docker.io/library/alpine", "library/alpine", "alpine",
		}},
		{"index.docker.io/team/app:1", []string{"index.docker.io/team/app:1", "docker.io/team/app:1", "team/app:1"}},
		{"127.0.0.1:5000/library/busybox:latest", []string{"127.0.0.1:5000/library/busybox:latest", "127.0.0.1:5000/library/busybox"}},
		{"reg.example.com/a/b@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", []string{"reg.example.com/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
	}
	for _, tc := range tests {
		if got := Spellings(tc.ref); !slices.Equal(got, tc.want) {
			t.Errorf("Spellings(%q) = %q, want %q", tc.ref, got, tc.want)
		}
	}
}

package testenv

import (
	"testing"
	"time"
)

func TestScale(t *testing.T) {
	for _, tc := range []struct {
		env  string
		in   time.Duration
		want time.Duration
	}{
		{"", 10 * time.Second, 10 * time.Second},
		{"1", 10 * time.Second, 10 * time.Second},
		{"2.5", 10 * time.Second, 25 * time.Second},
		{"0.5", time.Minute, 30 * time.Second},
	} {
		t.Setenv(TimeoutScaleEnv, tc.env)
		if got := Scale(tc.in); got != tc.want {
			t.Errorf("%s=%q: Scale(%v) = %v, want %v", TimeoutScaleEnv, tc.env, tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"x", "0", "-1", "NaN"} {
		t.Setenv(TimeoutScaleEnv, bad)
		if _, err := TimeoutScale(); err == nil {
			t.Errorf("%s=%q: TimeoutScale() = nil error, want one", TimeoutScaleEnv, bad)
		}
	}
}

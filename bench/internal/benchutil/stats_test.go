package benchutil

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6} // 1..10, unsorted
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {1, 1}, {0, 1}} {
		if got := Percentile(ds, tc.p); got != tc.want {
			t.Errorf("Percentile(1..10, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil, 50) = %v, want 0", got)
	}
	if ds[0] != 5 {
		t.Error("Percentile sorted its argument in place")
	}
}

func TestCountWriter(t *testing.T) {
	var c CountWriter
	c.Write([]byte("hello"))
	c.Write([]byte(", world"))
	if c.N() != 12 {
		t.Errorf("CountWriter.N() after 12 bytes = %d, want 12", c.N())
	}
}

package benchutil

import (
	"context"
	"io"
	"math"
	"sort"
	"sync/atomic"
	"time"

	"github.com/buildgw/buildgw/api"
)

// Percentile is the nearest-rank p-th percentile of ds (in any order); 0
// for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// MinDuration of ds; 0 for none.
func MinDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for i, d := range ds {
		if i == 0 || d < m {
			m = d
		}
	}
	return m
}

// MaxDuration of ds; 0 for none.
func MaxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// BuildGetter reads a build's status; *client.Client is one.
type BuildGetter interface {
	Get(ctx context.Context, id string) (*api.Build, error)
}

// WaitFinal polls build id every interval until it is final or ctx ends.
func WaitFinal(ctx context.Context, g BuildGetter, id string, interval time.Duration) (*api.Build, error) {
	for {
		b, err := g.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if b.Status.Final() {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// PeakSampler calls each probe every interval until the returned stop is
// called, which returns the highest value each probe gave.
func PeakSampler(interval time.Duration, probes ...func() int64) (stop func() []int64) {
	done := make(chan struct{})
	res := make(chan []int64)
	go func() {
		peaks := make([]int64, len(probes))
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for i, p := range probes {
				peaks[i] = max(peaks[i], p())
			}
			select {
			case <-done:
				res <- peaks
				return
			case <-t.C:
			}
		}
	}()
	return func() []int64 { close(done); return <-res }
}

// PeakRSS samples RSSUnder(dir) every 100ms until stop is called, which
// returns the highest.
func PeakRSS(dir string) (stop func() int64) {
	s := PeakSampler(100*time.Millisecond, func() int64 { return RSSUnder(dir) })
	return func() int64 { return s()[0] }
}

// CountWriter counts the bytes written through it to W, or discarded
// when W is nil. It is safe for concurrent use.
type CountWriter struct {
	W io.Writer
	n atomic.Int64
}

func (c *CountWriter) Write(p []byte) (int, error) {
	n := len(p)
	var err error
	if c.W != nil {
		n, err = c.W.Write(p)
	}
	c.n.Add(int64(n))
	return n, err
}

// N is the number of bytes written so far.
func (c *CountWriter) N() int64 { return c.n.Load() }

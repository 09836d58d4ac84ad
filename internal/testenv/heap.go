package testenv

import (
	"runtime"
	"sync/atomic"
	"time"
)

// PeakHeapGrowth runs f and returns how far the heap in use grew beyond
// what it was before, at most, sampled every millisecond: what a test of
// a bound on memory (a stream never held whole, a body cut at its limit)
// checks.
func PeakHeapGrowth(f func()) int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-sampled
	return int64(peak.Load()) - int64(baseline)
}

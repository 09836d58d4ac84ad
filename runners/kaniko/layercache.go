package kaniko

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// layerCaches tracks which tenants' layer caches builds are using, and
// keeps all of them together within a bound.
type layerCaches struct {
	dir      string
	maxBytes int64
	mu       sync.Mutex
	active   map[string]int // tenant cache directory → running builds
}

// enter marks dir in use by one more build.
func (lc *layerCaches) enter(dir string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.active == nil {
		lc.active = map[string]int{}
	}
	lc.active[dir]++
}

// leave marks dir used by one build less, then evicts. Eviction never
// touches a tenant with a build running: kaniko may be reading any of its
// entries.
func (lc *layerCaches) leave(dir string) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.active[dir]--; lc.active[dir] <= 0 {
		delete(lc.active, dir)
	}
	return lc.evictLocked()
}

// evictLocked removes the oldest entries (kaniko keeps one OCI layout per
// cached layer in a tenant's directory) of idle tenants until all tenants'
// entries fit in maxBytes.
func (lc *layerCaches) evictLocked() error {
	type entry struct {
		path string
		mod  time.Time
		size int64
	}
	var idle []entry
	var total int64
	tenants, err := os.ReadDir(lc.dir)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		td := filepath.Join(lc.dir, t.Name())
		es, err := os.ReadDir(td)
		if err != nil {
			continue
		}
		for _, e := range es {
			p := filepath.Join(td, e.Name())
			info, err := e.Info()
			if err != nil {
				continue
			}
			s := treeSize(p)
			total += s
			if lc.active[td] == 0 {
				idle = append(idle, entry{p, info.ModTime(), s})
			}
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].mod.Before(idle[j].mod) })
	for _, e := range idle {
		if total <= lc.maxBytes {
			break
		}
		if err := os.RemoveAll(e.path); err != nil {
			return fmt.Errorf("evicting cached layer %s: %w", e.path, err)
		}
		total -= e.size
	}
	return nil
}

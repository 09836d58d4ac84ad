package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/builder/diskusage"
)

// DiskError is why the Manager stopped a build that took too much disk.
type DiskError struct{ msg string }

func (e *DiskError) Error() string { return e.msg }

var _ error = (*DiskError)(nil)

// watchDisk measures j's workspace while it builds, whatever the runner,
// and stops the build through stop with a *DiskError when the workspace
// holds more than the workspace limit, or when it grows while the state
// directory's filesystem has less than the minimum free. Measuring walks
// the tree, so the wait between two walks is at least 20 times the last
// walk: the watcher never takes more than about 5 % of a core. It returns
// when ctx ends, with the largest size it measured.
func (m *Manager) watchDisk(ctx context.Context, j *Job, stop context.CancelCauseFunc) int64 {
	var peak, last int64
	wait := m.o.diskCheckEvery
	for {
		select {
		case <-ctx.Done():
			return peak
		case <-time.After(wait):
		}
		start := time.Now()
		u, err := diskusage.Measure(j.workspace)
		took := time.Since(start)
		wait = max(m.o.diskCheckEvery, 20*took)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, fs.ErrNotExist) {
				m.o.logger.Warn("measuring workspace", "job", j.ID, "error", err)
			}
			continue
		}
		peak = max(peak, u.Bytes)
		if lim := m.o.workspaceMax; lim > 0 && u.Bytes > lim {
			j.Log.Printf("the workspace holds %s in %d files and directories, over the limit of %s", sizeString(u.Bytes), u.Entries, sizeString(lim))
			stop(&DiskError{fmt.Sprintf("the build's workspace exceeded %s (workspace_max_bytes); see the build log", sizeString(lim))})
			return peak
		}
		if minFree := m.o.minFreeBytes; minFree > 0 && u.Bytes > last {
			where, setting := "the state directory", "min_free_bytes"
			if m.inMemory(j.workspace) {
				// Shared by the builds in memory: an eighth of it is
				// enough of a margin.
				minFree = min(minFree, uint64(m.o.memBytes/8))
				where, setting = "the workspaces' tmpfs", "min_free_bytes, or an eighth of workspace_memory_bytes"
			}
			var st unix.Statfs_t
			if err := unix.Statfs(filepath.Dir(j.workspace), &st); err == nil {
				if free := st.Bavail * uint64(st.Bsize); free < minFree {
					j.Log.Printf("the workspace grew to %s while %s has %s free, under the minimum of %s", sizeString(u.Bytes), where, sizeString(int64(free)), sizeString(int64(minFree)))
					stop(&DiskError{fmt.Sprintf("%s is almost full (%s free, under %s of %s) and the build's workspace kept growing; see the build log", where, sizeString(int64(free)), setting, sizeString(int64(minFree)))})
					return peak
				}
			}
		}
		last = u.Bytes
	}
}

// sizeString writes n bytes in the largest binary unit that keeps it
// readable: "20 GiB", "1.5 GiB", "512 MiB".
func sizeString(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 || v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), units[u])
	}
	return fmt.Sprintf("%.1f %s", v, units[u])
}

package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/diskusage"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/workspace"
)

// DiskError is why the Manager stopped a build that took too much disk.
type DiskError struct{ msg string }

func (e *DiskError) Error() string { return e.msg }

var _ error = (*DiskError)(nil)

// watchDisk measures j's workspace while it builds, whatever the runner,
// and stops the build through stop with a *DiskError when the workspace
// (with the build's log, and the deleted files its processes hold, which
// del follows) holds more than the workspace limit, when it
// grows while the filesystem of the workspace has less than the minimum
// free, or when it cannot be measured. Measuring walks the tree, so the
// wait between two walks is at least 20 times the last walk (4 times
// when close to a limit): the watcher takes about 5 % of a core, 20 %
// while a build nears a limit. A writer fills a disk faster than that
// (GB/s), so the guard also reads the filesystem's free space (a statfs)
// every freeCheckEvery, and walks at once when it is under the minimum
// and falling: a build whose workspace grew since the last walk is
// stopped before the disk fills, others sharing the disk go on. A
// workspace with a tmpfs of its own needs neither: the kernel holds it
// to its size, and a statfs tells its use. It returns when ctx ends,
// with the largest size it measured.
func (m *Manager) watchDisk(ctx context.Context, j *Job, del *deletedFiles, stop context.CancelCauseFunc) int64 {
	if _, ok := m.ws.OwnTmpfs(j.workspace); ok {
		return m.watchTmpfs(ctx, j)
	}
	minFree, _, _ := m.minFree(j)
	dir := filepath.Dir(j.workspace)
	var tick <-chan time.Time
	var lastFree uint64
	if minFree > 0 {
		t := time.NewTicker(m.o.freeCheckEvery)
		defer t.Stop()
		tick = t.C
		lastFree, _ = freeBytes(dir)
	}
	walk := time.NewTimer(m.o.diskCheckEvery)
	defer walk.Stop()
	var peak, last int64
	// Growth counts from the workspace as the build starts (its context
	// and base images), so that a build that writes nothing is never
	// taken for the writer when the disk runs low.
	if minFree > 0 {
		if u, err := measureWorkspace(j, del); err == nil {
			last = u.Bytes
		}
	}
	var took time.Duration
	var walked time.Time
	for {
		guard := false
		select {
		case <-ctx.Done():
			return peak
		case <-walk.C:
		case <-tick:
			free, ok := freeBytes(dir)
			if !ok {
				continue
			}
			falling := free < lastFree
			lastFree = free
			// Someone writes while the disk is low. Walks for it are 4
			// walks apart at least, so that builds sharing a disk that
			// another keeps filling spend at most a fifth of a core.
			if free >= minFree || !falling || time.Since(walked) < 4*took {
				continue
			}
			guard = true
		}
		start := time.Now()
		u, err := measureWorkspace(j, del)
		walked = time.Now()
		took = walked.Sub(start)
		if !guard {
			walk.Reset(max(m.o.diskCheckEvery, 20*took))
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, fs.ErrNotExist) {
				continue // the build is over, its workspace going
			}
			// Unmeasured, a build could fill the disk unseen.
			j.Log.Printf("the workspace could not be measured: %v", err)
			stop(&DiskError{fmt.Sprintf("the build's workspace could not be measured, so its disk use could not be bounded: %s", measureReason(err))})
			return peak
		}
		peak = max(peak, u.Bytes)
		if de := m.overLimit(j, u, del.bytes); de != nil {
			stop(de)
			return peak
		}
		// Grown since the last walk (or, at the first, holding anything).
		grew := u.Bytes > last
		last = u.Bytes
		var free uint64
		if minFree > 0 && grew {
			var de *DiskError
			if free, de = m.lowFree(j, u.Bytes, del.bytes, true); de != nil {
				stop(de)
				return peak
			}
		}
		// Close to a limit: look again sooner.
		lim := m.o.workspaceMax
		if !guard && ((lim > 0 && u.Bytes > lim/4*3) || (free > 0 && free < 2*minFree)) {
			walk.Reset(max(m.o.diskCheckEvery/8, 4*took))
		}
	}
}

// measureWorkspace returns what j's workspace takes: its tree, its log,
// and the deleted files its processes hold (del).
func measureWorkspace(j *Job, del *deletedFiles) (diskusage.Usage, error) {
	u, err := diskusage.Measure(j.workspace)
	if err != nil {
		return u, err
	}
	held, err := del.measure()
	u.Bytes += j.Log.Stored() + held
	return u, err
}

// freeBytes returns the bytes free to the gateway on the filesystem of
// dir.
func freeBytes(dir string) (uint64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}

// measureReason words why Measure failed for a build's error.
func measureReason(err error) string {
	switch {
	case errors.Is(err, diskusage.ErrTooDeep):
		return fmt.Sprintf("its directories nest more than %d deep", diskusage.MaxDepth)
	case errors.Is(err, errTooManyDeleted):
		return errTooManyDeleted.Error()
	case errors.Is(err, diskusage.ErrTooManyLinks):
		return fmt.Sprintf("it holds more than %d hard-linked files", diskusage.MaxLinked)
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return "the gateway ran out of file descriptors"
	case errors.Is(err, fs.ErrPermission):
		return "the gateway may not read all of it (permission denied)"
	}
	return err.Error()
}

// overLimit returns the error of a build whose workspace u is over the
// limit, else nil. deleted bytes of u are in deleted files the build
// held.
func (m *Manager) overLimit(j *Job, u diskusage.Usage, deleted int64) *DiskError {
	lim := m.o.workspaceMax
	if lim <= 0 || u.Bytes <= lim {
		return nil
	}
	j.Log.Printf("the workspace holds %s in %d files and directories%s, over the limit of %s", sizeString(u.Bytes), u.Entries, deletedNote(deleted), sizeString(lim))
	return &DiskError{fmt.Sprintf("the build's workspace exceeded %s (workspace_max_bytes)%s; see the build log", sizeString(lim), deletedNote(deleted))}
}

// deletedNote says how much of a workspace was in deleted files the
// build held, if any.
func deletedNote(deleted int64) string {
	if deleted <= 0 {
		return ""
	}
	return fmt.Sprintf(", %s of it held in deleted files its processes kept open", sizeString(deleted))
}

// minFree returns the free space the filesystem of j's workspace keeps,
// what it is, and the setting that says so.
func (m *Manager) minFree(j *Job) (minFree uint64, where, setting string) {
	minFree, where, setting = m.o.minFreeBytes, "the state directory", "min_free_bytes"
	if minFree > 0 && m.ws.InMemory(j.workspace) {
		// Shared by the builds in memory: an eighth of it is
		// enough of a margin.
		minFree = min(minFree, uint64(m.o.memBytes/8))
		where, setting = "the workspaces' tmpfs", "min_free_bytes, or an eighth of workspace_memory_bytes"
	}
	return minFree, where, setting
}

// lowFree returns the free bytes of the filesystem of j's workspace, and
// the error of a build whose workspace (used bytes, deleted of them in
// deleted files it held) grows while that is under the minimum free:
// guard when the disk guard stops it, else the build failed on its own.
func (m *Manager) lowFree(j *Job, used, deleted int64, guard bool) (uint64, *DiskError) {
	minFree, where, setting := m.minFree(j)
	free, ok := freeBytes(filepath.Dir(j.workspace))
	if !ok || free >= minFree {
		return free, nil
	}
	j.Log.Printf("the workspace grew to %s%s while %s has %s free, under the minimum of %s", sizeString(used), deletedNote(deleted), where, sizeString(int64(free)), sizeString(int64(minFree)))
	msg := fmt.Sprintf("%s is almost full (%s free, under %s of %s) and the build's workspace kept growing%s; see the build log", where, sizeString(int64(free)), setting, sizeString(int64(minFree)), deletedNote(deleted))
	if guard {
		msg = "stopped by the disk guard before the disk filled: " + msg
	}
	return free, &DiskError{msg}
}

// watchTmpfs follows the use of a workspace on a tmpfs of its own until
// ctx ends and returns the most it held.
func (m *Manager) watchTmpfs(ctx context.Context, j *Job) int64 {
	var peak int64
	every := min(m.o.diskCheckEvery, 500*time.Millisecond)
	for {
		if _, used, ok := tmpfsUse(j.workspace); ok {
			peak = max(peak, used)
		}
		select {
		case <-ctx.Done():
			return peak
		case <-time.After(every):
		}
	}
}

// tmpfsUse returns the size and used bytes of the tmpfs at dir.
func tmpfsUse(dir string) (size, used int64, ok bool) {
	size, free, ok := hostfs.TmpfsSpace(dir)
	return size, size - free, ok
}

// diskCause returns why a build that failed with err ran out of disk, if
// it did: a workspace that filled its own tmpfs (the kernel stopped the
// writer with ENOSPC, and the runner failed as it could) or grew past
// its limit or the free space of the disk between two measurements.
// peak is the most the watcher saw in it; del, the deleted files the
// build held.
func (m *Manager) diskCause(j *Job, peak int64, del *deletedFiles) *DiskError {
	if size, ok := m.ws.OwnTmpfs(j.workspace); ok {
		_, used, _ := tmpfsUse(j.workspace)
		// Full but for the pages ENOSPC left unused.
		if max(peak, used) < size-max(size/64, 256<<10) {
			return nil
		}
		j.Log.Printf("the workspace filled its tmpfs of %s", sizeString(size))
		setting := "workspace_max_bytes"
		if m.o.workspaceMax <= 0 || size < m.o.workspaceMax {
			setting = "its share of workspace_memory_bytes, divided by concurrency"
		}
		return &DiskError{fmt.Sprintf("the build filled its workspace (limit %s, %s); see the build log", sizeString(size), setting)}
	}
	u, err := diskusage.Measure(j.workspace)
	if err != nil {
		return nil
	}
	// The processes are gone: what they held counts as last seen.
	u.Bytes += j.Log.Stored() + del.bytes
	if de := m.overLimit(j, u, del.bytes); de != nil {
		return de
	}
	// ENOSPC leaves the disk all but full.
	free, ok := freeBytes(filepath.Dir(j.workspace))
	if !ok {
		return nil
	}
	if minFree, _, _ := m.minFree(j); minFree > 0 && free < minFree && u.Bytes > 0 {
		_, de := m.lowFree(j, u.Bytes, del.bytes, false)
		return de
	}
	if free < 1<<20 {
		j.Log.Printf("the workspace holds %s and the disk of the state directory has %s free", sizeString(u.Bytes), sizeString(int64(free)))
		return &DiskError{fmt.Sprintf("the disk of the state directory filled up (%s free) while the build's workspace held %s; see the build log", sizeString(int64(free)), sizeString(u.Bytes))}
	}
	return nil
}

// sizeString writes n bytes in a readable unit ("1.5 GiB").
func sizeString(n int64) string { return workspace.SizeString(n) }

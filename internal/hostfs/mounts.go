package hostfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is one mount of this process's mount namespace.
type Mount = mountinfo.Info

// Mounts returns the mounts at or below dir, in mountinfo's order (a
// mount stacked on another comes after it).
func Mounts(dir string) ([]*Mount, error) {
	dir = filepath.Clean(dir)
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !under(m.Mountpoint, dir), false
	})
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	return ms, nil
}

// MountsOfType returns every mount of one of the file system types.
func MountsOfType(fstype ...string) ([]*Mount, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter(fstype...))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	return ms, nil
}

// MountAt returns the mount on top at dir, or nil if dir is no mount
// point.
func MountAt(dir string) (*Mount, error) {
	ms, err := Mounts(dir)
	if err != nil {
		return nil, err
	}
	var top *Mount
	for _, m := range ms {
		if m.Mountpoint == filepath.Clean(dir) {
			top = m // a mount stacked on another comes after it
		}
	}
	return top, nil
}

// UnmountUnder detaches every mount at or below dir, but the mount points
// in keep (only those: a mount below a kept one still goes), deepest
// first, and returns the errors of those that stay.
//
// It detaches lazily (MNT_DETACH): a mount some process still holds (an
// open file, a working directory that escaped a kill) would fail a plain
// unmount with EBUSY and stay reachable under dir; detached, it is gone
// from the tree at once, nothing new can reach it by path, and the
// kernel frees it when its last user goes. Callers kill what works under
// dir first (KillUnder), so that last user goes soon. Deepest first so
// that each mount is detached by its own path and its error is its own;
// a mount that is already gone (EINVAL, ENOENT: raced with another
// unmount, or taken along with a parent) is not an error. dir itself is
// included: to keep it, name it in keep.
func UnmountUnder(dir string, keep ...string) error {
	ms, err := Mounts(dir)
	if err != nil {
		return err
	}
	var points []string
	for _, m := range ms {
		if !slices.Contains(keep, m.Mountpoint) {
			points = append(points, m.Mountpoint)
		}
	}
	// Longer paths are never parents of shorter ones. Mounts stacked at
	// one point each get a detach of their own (each takes the top one).
	sort.SliceStable(points, func(a, b int) bool { return len(points[a]) > len(points[b]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// under reports whether p is dir or a path below it.
func under(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

// Package workspace owns where builds keep their files: the state
// directory's layout (Layout), each build's workspace in memory or on
// disk (Workspaces), and the trash that workspaces go to when their build
// is over, emptied by a reaper off the builds' critical path.
package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/internal/hostfs"
)

// Workspaces in memory.
//
// A build creates and removes tens of thousands of files: the extracted
// context, unpacked base images, every RUN step's output and kaniko's
// copies of them. On a disk each of those costs a journal update; on a
// tmpfs it costs a page of memory (bench/README.md has the figures).
//
// So each build can have a tmpfs of its own under Layout.Mem, as large as
// its workspace limit (at most its share of the memory for workspaces:
// that divided by the concurrency), reserved when the build is submitted:
// builds never share the room, so one that fills its tmpfs gets ENOSPC
// while the others go on, and the kernel stops it at its limit at once
// rather than a sampler some seconds later. A build whose reservation
// does not fit, or whose largest possible context does not fit in it,
// goes to disk. Removing such a workspace is an unmount. (tmpfs quotas
// are per user or group, and every sandbox maps the same subordinate ids:
// no use here.)
//
// A gateway that may not mount uses a tmpfs the operator mounted at
// Layout.Mem as one pool for all builds, falling back to disk for a build
// created while it is short of room, with no isolation between the builds
// in it.

// Placement is where a workspace was made.
type Placement int

// The placements, in the order Placed reports them.
const (
	InMemory Placement = iota
	OnDisk
	numPlacements
)

// sharedSource is the source of the shared tmpfs this package mounts,
// which tells it apart from one the operator mounted.
const sharedSource = "buildgw-workspaces"

// buildSource is the source of a build's own tmpfs.
const buildSource = "buildgw-workspace"

// RemoveFunc removes a workspace's files: a runner's builder.Remover, or
// os.RemoveAll.
type RemoveFunc func(ctx context.Context, dir string) error

// Workspaces makes, places and removes the builds' workspaces under a
// Layout. Close it when done.
type Workspaces struct {
	l Layout
	o options

	// mounted is set when the shared tmpfs at l.Mem is ours to unmount.
	mounted bool
	// perBuild is set when each workspace in memory is a tmpfs of its
	// own; reserved holds their sizes, by workspace (under mu).
	perBuild bool
	mu       sync.Mutex
	reserved map[string]int64

	placed [numPlacements]atomic.Int64

	trash   chan trashItem // workspaces for the reaper to remove
	reaping atomic.Bool    // whether a reaper runs
}

// New creates the directories of l that hold workspaces and prepares the
// memory for them: a tmpfs per build if the process may mount, else the
// tmpfs the operator (or a previous run) mounted at l.Mem, else one it
// mounts there.
func New(l Layout, opts ...Option) (*Workspaces, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{l.Jobs, l.Trash} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("creating state directory: %w", err)
		}
	}
	w := &Workspaces{l: l, o: o, reserved: map[string]int64{}, trash: make(chan trashItem, 256)}
	if o.memBytes > 0 {
		if err := w.mountMemory(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (w *Workspaces) mountMemory() error {
	dir := w.l.Mem
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	defer os.Mkdir(w.l.MemTrash, 0o700)
	if err := canMountTmpfs(dir); err == nil {
		w.perBuild = true
		// The shared tmpfs of an earlier version goes once empty.
		w.mounted = hostfs.IsTmpfsMount(dir) && mountSource(dir) == sharedSource
		return nil
	}
	if hostfs.IsTmpfsMount(dir) {
		// Ours from an earlier run (with queued builds in it) is ours
		// to unmount; the operator's is not.
		w.mounted = mountSource(dir) == sharedSource
		return nil
	}
	w.mounted = true
	if err := MountTmpfs(sharedSource, dir, w.o.memBytes); err != nil {
		return fmt.Errorf("mounting a tmpfs of %s for workspaces at %s (needs root with CAP_SYS_ADMIN; or keep workspaces on disk): %w", SizeString(w.o.memBytes), dir, err)
	}
	return nil
}

// MountTmpfs mounts a tmpfs of size bytes at dir as workspaces have it
// (benchmarks mount theirs alike). No exec restriction: the job roots
// run the executor and RUN steps.
func MountTmpfs(source, dir string, size int64) error {
	opts := "mode=0711,size=" + strconv.FormatInt(size, 10)
	// Huge pages for files of 2 MiB and more, never past a file's end:
	// writing a large file then costs a fifth of the time (a context's
	// big files, kaniko's layer tarballs; bench/upload). A kernel without
	// them refuses the option.
	err := unix.Mount(source, dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts+",huge=within_size")
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mount(source, dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
	}
	return err
}

// canMountTmpfs tries a tmpfs in dir.
func canMountTmpfs(dir string) error {
	probe, err := os.MkdirTemp(dir, ".probe-")
	if err != nil {
		return err
	}
	defer os.Remove(probe)
	if err := unix.Mount(buildSource, probe, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4096"); err != nil {
		return err
	}
	return unix.Unmount(probe, unix.MNT_DETACH)
}

// mountSource returns the source of the mount on top at dir ("" if dir
// is no mount point).
func mountSource(dir string) string {
	m, err := hostfs.MountAt(dir)
	if err != nil || m == nil {
		return ""
	}
	return m.Source
}

// buildRoom is the room a build's own tmpfs gets: its workspace limit, at
// most its share of the memory for workspaces (so that as many builds as
// may run at once fit).
func (w *Workspaces) buildRoom() int64 {
	size := w.o.memBytes / int64(w.o.concurrency)
	if m := w.o.maxBytes; m > 0 && m < size {
		size = m
	}
	return size &^ 4095
}

// contextRoom is the most an extracted context within lim can take on a
// tmpfs: its bytes and a page for each file's tail.
func contextRoom(lim archive.Limits) int64 {
	lim = lim.WithDefaults()
	return lim.MaxBytes + int64(lim.MaxFiles)*4096
}

// Create makes the workspace of build id, mode 0700: in memory if there
// is room for all a context within lim could take, else on disk.
func (w *Workspaces) Create(id string, lim archive.Limits) (string, error) {
	if w.o.memBytes > 0 && w.perBuild {
		ws := filepath.Join(w.l.Mem, id)
		size := w.buildRoom()
		if contextRoom(lim) <= size && w.reserve(ws, size) {
			err := os.Mkdir(ws, 0o700)
			if err == nil {
				if err = MountTmpfs(buildSource, ws, size); err == nil {
					err = os.Chmod(ws, 0o700)
				}
			}
			if err == nil {
				w.placed[InMemory].Add(1)
				return ws, nil
			}
			w.o.logger.Warn("mounting a workspace in memory; using disk", "job", id, "error", err)
			unix.Unmount(ws, unix.MNT_DETACH)
			os.Remove(ws)
			w.release(ws)
		}
		w.placed[OnDisk].Add(1)
		ws = filepath.Join(w.l.Jobs, id)
		return ws, os.Mkdir(ws, 0o700)
	}
	p := w.sharedPlacement()
	w.placed[p].Add(1)
	parent := w.l.Jobs
	if p == InMemory {
		parent = w.l.Mem
	}
	ws := filepath.Join(parent, id)
	return ws, os.Mkdir(ws, 0o700)
}

// sharedPlacement is where a new workspace goes without a tmpfs per
// build: the shared tmpfs while at least a quarter of it is free, else
// the disk.
func (w *Workspaces) sharedPlacement() Placement {
	if w.o.memBytes > 0 {
		if size, free, ok := hostfs.TmpfsSpace(w.l.Mem); ok && free*4 >= size {
			return InMemory
		}
	}
	return OnDisk
}

// reserve sets size bytes of the memory for workspaces aside for ws, if
// they are free.
func (w *Workspaces) reserve(ws string, size int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	var used int64
	for _, n := range w.reserved {
		used += n
	}
	if used+size > w.o.memBytes {
		return false
	}
	w.reserved[ws] = size
	return true
}

func (w *Workspaces) release(ws string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.reserved, ws)
}

// OwnTmpfs reports whether ws is a workspace with a tmpfs of its own,
// and its size.
func (w *Workspaces) OwnTmpfs(ws string) (int64, bool) {
	if !w.perBuild || !w.InMemory(ws) {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	size, ok := w.reserved[ws]
	return size, ok
}

// InMemory reports whether ws is in memory.
func (w *Workspaces) InMemory(ws string) bool {
	return w.o.memBytes > 0 && filepath.Dir(ws) == w.l.Mem
}

// Placed returns how many workspaces were made in memory and on disk
// since New: builds that went to disk while memory workspaces are on
// found the memory too full (an undersized tmpfs shows there first).
func (w *Workspaces) Placed() (memory, disk int64) {
	return w.placed[InMemory].Load(), w.placed[OnDisk].Load()
}

// Memory returns the size and free bytes of the memory for workspaces
// (with a tmpfs per build: what is not reserved), or zeros when
// workspaces are on disk.
func (w *Workspaces) Memory() (size, free int64) {
	if w.o.memBytes == 0 {
		return 0, 0
	}
	if w.perBuild {
		w.mu.Lock()
		defer w.mu.Unlock()
		free = w.o.memBytes
		for _, n := range w.reserved {
			free -= n
		}
		return w.o.memBytes, free
	}
	size, free, _ = hostfs.TmpfsSpace(w.l.Mem)
	return size, free
}

// Dirs returns the directories that hold workspaces and those that hold
// trashed ones: without memory workspaces, the disk's only.
func (w *Workspaces) Dirs() (workspaces, trash []string) {
	if w.o.memBytes == 0 {
		return []string{w.l.Jobs}, []string{w.l.Trash}
	}
	return w.l.WorkspaceDirs(), w.l.TrashDirs()
}

// trashDir is where ws goes when its build is over: a rename away, on the
// same file system.
func (w *Workspaces) trashDir(ws string) string {
	if w.InMemory(ws) {
		return w.l.MemTrash
	}
	return w.l.Trash
}

// MountedMemory returns the size of a tmpfs mounted at l.Mem (by the
// operator, or by an earlier run), or 0.
func MountedMemory(l Layout) int64 {
	if !hostfs.IsTmpfsMount(l.Mem) {
		return 0
	}
	size, _, _ := hostfs.TmpfsSpace(l.Mem)
	return size
}

// Recover makes sure nothing a previous run left under the state
// directory still runs or stays mounted: it kills every process working
// in a workspace or the trash, then detaches every mount under the state
// directory but the directory itself, the shared memory and the
// workspaces of queued builds (which hold their contexts). It returns
// how many processes it killed.
func (w *Workspaces) Recover(queued []string) (int, error) {
	ws, trash := w.Dirs()
	killed := hostfs.KillUnder(3*time.Second, append(ws, trash...)...)
	keep := []string{w.l.Root, w.l.Mem}
	for _, q := range queued {
		if filepath.Dir(q) == w.l.Mem {
			keep = append(keep, q)
		}
	}
	if err := hostfs.UnmountUnder(w.l.Root, keep...); err != nil {
		return len(killed), fmt.Errorf("unmounting leftovers: %w", err)
	}
	return len(killed), nil
}

// Adopt takes over the workspace of a build queued by a previous run: a
// tmpfs of its own is reserved again.
func (w *Workspaces) Adopt(ws string) {
	if w.perBuild && w.InMemory(ws) && hostfs.IsTmpfsMount(ws) {
		if size, _, ok := hostfs.TmpfsSpace(ws); ok {
			w.mu.Lock()
			w.reserved[ws] = size
			w.mu.Unlock()
		}
	}
}

// Close unmounts the shared tmpfs if this package mounted it and it
// holds no workspaces any more (queued builds' are kept for the next
// start).
func (w *Workspaces) Close() {
	if !w.mounted {
		return // not ours
	}
	os.Remove(w.l.MemTrash) // fails unless empty
	if ents, err := os.ReadDir(w.l.Mem); err != nil || len(ents) > 0 {
		return
	}
	if err := unix.Unmount(w.l.Mem, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		w.o.logger.Error("unmounting the workspaces' tmpfs", "dir", w.l.Mem, "error", err)
	}
}

// Remove removes ws now: its own tmpfs is unmounted (with everything on
// it) and its reservation released, a tree nested deeper than
// flattenDepth is lifted up first, and rm removes the rest.
func (w *Workspaces) Remove(ctx context.Context, ws string, rm RemoveFunc) error {
	if w.perBuild && w.InMemory(ws) {
		defer w.release(ws)
		// EINVAL: no tmpfs of its own (any more).
		if err := unix.Unmount(ws, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			w.o.logger.Error("unmounting workspace", "dir", ws, "error", err)
		}
	}
	// os.RemoveAll holds a descriptor and a buffer per level: a tree a
	// RUN step made deep on purpose would take the gateway's descriptors
	// and memory. Lift what is deeper up first.
	if err := flattenTree(ws, flattenDepth); err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.o.logger.Warn("flattening workspace before removing it", "dir", ws, "error", err)
	}
	if rm == nil {
		rm = removeAll
	}
	if err := rm(ctx, ws); err != nil {
		return fmt.Errorf("removing workspace %s: %w", ws, err)
	}
	return nil
}

func removeAll(_ context.Context, dir string) error { return os.RemoveAll(dir) }

type trashItem struct {
	dir string
	rm  RemoveFunc
}

// Discard takes ws out of its directory at once, with one rename into
// the trash, and leaves the slow part (unlinking an unpacked base image
// takes about a second) to the reaper (Reap), so that a build is reported
// as soon as it is over. A workspace with a tmpfs of its own, or one
// discarded while no reaper runs or the reaper is behind, is removed
// here.
func (w *Workspaces) Discard(ctx context.Context, ws string, rm RemoveFunc) {
	if _, ok := w.OwnTmpfs(ws); !ok {
		trash := filepath.Join(w.trashDir(ws), filepath.Base(ws))
		if w.reaping.Load() && os.Rename(ws, trash) == nil {
			select {
			case w.trash <- trashItem{trash, rm}:
				return
			default:
				ws = trash // the reaper is behind: remove here
			}
		}
	}
	if err := w.Remove(ctx, ws, rm); err != nil {
		w.o.logger.Error("removing workspace", "dir", ws, "error", err)
	}
}

// Reap removes discarded workspaces until ctx ends, then what is left.
// Workspaces trashed before a restart are removed first, with rm.
func (w *Workspaces) Reap(ctx context.Context, rm RemoveFunc) {
	w.reaping.Store(true)
	remove := func(it trashItem) {
		if err := w.Remove(context.WithoutCancel(ctx), it.dir, it.rm); err != nil {
			w.o.logger.Error("removing workspace", "dir", it.dir, "error", err)
		}
	}
	_, trash := w.Dirs()
	for _, dir := range trash {
		if ents, err := os.ReadDir(dir); err == nil {
			for _, e := range ents {
				remove(trashItem{filepath.Join(dir, e.Name()), rm})
			}
		}
	}
	for {
		select {
		case it := <-w.trash:
			remove(it)
		case <-ctx.Done():
			w.reaping.Store(false)
			for {
				select {
				case it := <-w.trash:
					remove(it)
				default:
					return
				}
			}
		}
	}
}

// SizeString writes n bytes in the largest binary unit that keeps it
// readable: "20 GiB", "1.5 GiB", "512 MiB".
func SizeString(n int64) string {
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

package jobs

import (
	"errors"

	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/buildgw/buildgw/archive"

	"golang.org/x/sys/unix"
)

// Workspaces in memory.
//
// A build creates and removes tens of thousands of files: the extracted
// context, unpacked base images, every RUN step's output and kaniko's
// copies of them. On a disk each of those costs a journal update; on a
// tmpfs it costs a page of memory. The reference build of bench/overhead
// spends 4× less time in the executor, and its context extracts 7×
// faster, on a tmpfs.
//
// So each build can have a tmpfs of its own under state_dir/mem, as
// large as its workspace limit (workspace_max_bytes, at most its share of
// workspace_memory_bytes: that divided by the concurrency), reserved out
// of workspace_memory_bytes when the build is submitted: builds never share the room, so one that fills
// its tmpfs gets ENOSPC while the others go on, and the kernel stops it
// at its limit at once rather than a sampler some seconds later. A build
// whose reservation does not fit, or whose largest possible context does
// not fit in it, goes to disk. Removing such a workspace is an unmount.
// (tmpfs quotas are per user or group, and every sandbox maps the same
// subordinate ids: no use here.)
//
// A gateway that may not mount uses a tmpfs the operator mounted at
// state_dir/mem as one pool for all builds, falling back to disk for a
// build submitted while it is short of room, with no isolation between
// the builds in it.

// memDir is the tmpfs's mount point under the state directory.
const memDir = "mem"

// memTrash is where workspaces in memory go to be removed: a rename
// within the tmpfs.
const memTrash = ".trash"

// memSource is the source of the tmpfs the Manager mounts, which tells it
// apart from one the operator mounted.
const memSource = "buildgw-workspaces"

// memBuildSource is the source of a build's own tmpfs.
const memBuildSource = "buildgw-workspace"

// mountMemory prepares workspaces in memory: one tmpfs per build if the
// gateway may mount, else the tmpfs the operator (or a previous run)
// mounted, with the queued builds' contexts in it.
func (m *Manager) mountMemory() error {
	dir := filepath.Join(m.stateDir, memDir)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	defer os.Mkdir(filepath.Join(dir, memTrash), 0o700)
	if err := canMountTmpfs(dir); err == nil {
		m.perBuild = true
		// The shared tmpfs of an earlier version goes once empty.
		m.mounted = isTmpfs(dir) && mountSource(dir) == memSource
		return nil
	}
	if isTmpfs(dir) {
		// Ours from an earlier run (with queued builds in it) is ours
		// to unmount; the operator's is not.
		m.mounted = mountSource(dir) == memSource
		return nil
	}
	m.mounted = true
	// No exec restriction: the job roots run the executor and RUN steps.
	if err := MountWorkspaceTmpfs(memSource, dir, m.o.memBytes); err != nil {
		return fmt.Errorf("mounting a tmpfs of %s for workspaces at %s (needs root with CAP_SYS_ADMIN; or keep workspaces on disk): %w", sizeString(m.o.memBytes), dir, err)
	}
	return nil
}

// MountWorkspaceTmpfs mounts a tmpfs of size bytes at dir as the Manager
// mounts the one for its workspaces (benchmarks mount theirs alike).
func MountWorkspaceTmpfs(source, dir string, size int64) error {
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
	if err := unix.Mount(memBuildSource, probe, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4096"); err != nil {
		return err
	}
	return unix.Unmount(probe, unix.MNT_DETACH)
}

// memRoom is the room a build's own tmpfs gets: its workspace limit, at
// most its share of the memory for workspaces (so that as many builds as
// may run at once fit).
func (m *Manager) memRoom() int64 {
	size := m.o.memBytes / int64(m.o.concurrency)
	if w := m.o.workspaceMax; w > 0 && w < size {
		size = w
	}
	return size &^ 4095
}

// contextRoom is the most an extracted context within lim can take on a
// tmpfs: its bytes and a page for each file's tail.
func contextRoom(lim archive.Limits) int64 {
	lim = lim.WithDefaults()
	return lim.MaxBytes + int64(lim.MaxFiles)*4096
}

// newWorkspace creates the workspace of build id: in memory if there is
// room for all a context within lim could take, else on disk.
func (m *Manager) newWorkspace(id string, lim archive.Limits) (string, error) {
	if m.o.memBytes > 0 && m.perBuild {
		ws := filepath.Join(m.stateDir, memDir, id)
		size := m.memRoom()
		if contextRoom(lim) <= size && m.reserveMemory(ws, size) {
			err := os.Mkdir(ws, 0o700)
			if err == nil {
				if err = MountWorkspaceTmpfs(memBuildSource, ws, size); err == nil {
					err = os.Chmod(ws, 0o700)
				}
			}
			if err == nil {
				m.placed[0].Add(1)
				return ws, nil
			}
			m.o.logger.Warn("mounting a workspace in memory; using disk", "job", id, "error", err)
			unix.Unmount(ws, unix.MNT_DETACH)
			os.Remove(ws)
			m.releaseMemory(ws)
		}
		m.placed[1].Add(1)
		ws = filepath.Join(m.stateDir, "jobs", id)
		return ws, os.Mkdir(ws, 0o700)
	}
	ws := filepath.Join(m.workspaceParent(), id)
	return ws, os.Mkdir(ws, 0o700)
}

// reserveMemory sets size bytes of the memory for workspaces aside for
// ws, if they are free.
func (m *Manager) reserveMemory(ws string, size int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	var used int64
	for _, n := range m.memReserved {
		used += n
	}
	if used+size > m.o.memBytes {
		return false
	}
	m.memReserved[ws] = size
	return true
}

func (m *Manager) releaseMemory(ws string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.memReserved, ws)
}

// ownTmpfs reports whether ws is a workspace with a tmpfs of its own,
// and its size.
func (m *Manager) ownTmpfs(ws string) (int64, bool) {
	if !m.perBuild || !m.inMemory(ws) {
		return 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	size, ok := m.memReserved[ws]
	return size, ok
}

// unmountMemory unmounts the workspaces' tmpfs unless it still holds
// workspaces (queued builds, kept for the next start).
func (m *Manager) unmountMemory() {
	if !m.mounted {
		return // not ours
	}
	dir := filepath.Join(m.stateDir, memDir)
	os.Remove(filepath.Join(dir, memTrash)) // fails unless empty
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		return
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		m.o.logger.Error("unmounting the workspaces' tmpfs", "dir", dir, "error", err)
	}
}

// workspaceParent is where a new workspace goes: the tmpfs while at least
// a quarter of it is free, else the disk.
func (m *Manager) workspaceParent() string {
	if m.o.memBytes > 0 {
		dir := filepath.Join(m.stateDir, memDir)
		if size, free, ok := tmpfsSpace(dir); ok && free*4 >= size {
			m.placed[0].Add(1)
			return dir
		}
	}
	m.placed[1].Add(1)
	return filepath.Join(m.stateDir, "jobs")
}

// Workspaces returns how many workspaces were made in memory and on disk
// since the Manager started: builds that went to disk while memory
// workspaces are on found the tmpfs too full (an undersized tmpfs shows
// there first).
func (m *Manager) Workspaces() (memory, disk int64) {
	return m.placed[0].Load(), m.placed[1].Load()
}

// WorkspaceMemory returns the size and free bytes of the memory for
// workspaces (with a tmpfs per build: what is not reserved), or zeros
// when workspaces are on disk.
func (m *Manager) WorkspaceMemory() (size, free int64) {
	if m.o.memBytes == 0 {
		return 0, 0
	}
	if m.perBuild {
		m.mu.Lock()
		defer m.mu.Unlock()
		free = m.o.memBytes
		for _, n := range m.memReserved {
			free -= n
		}
		return m.o.memBytes, free
	}
	size, free, _ = tmpfsSpace(filepath.Join(m.stateDir, memDir))
	return size, free
}

// tmpfsSpace returns the size and free bytes of the tmpfs dir is on; ok
// is false if it is on no tmpfs.
func tmpfsSpace(dir string) (size, free int64, ok bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return 0, 0, false
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize, true
}

// inMemory reports whether ws is on the workspaces' tmpfs.
func (m *Manager) inMemory(ws string) bool {
	return m.o.memBytes > 0 && filepath.Dir(ws) == filepath.Join(m.stateDir, memDir)
}

// trashDir is where ws goes when its build is over: a rename away, on the
// same file system.
func (m *Manager) trashDir(ws string) string {
	if m.inMemory(ws) {
		return filepath.Join(m.stateDir, memDir, memTrash)
	}
	return filepath.Join(m.stateDir, "trash")
}

// trashDirs are the directories trashDir returns.
func (m *Manager) trashDirs() []string {
	_, trash := m.places()
	return trash
}

// WorkspacePlaces lists every directory under stateDir where a Manager
// keeps workspaces (on disk, and on its tmpfs) and where it trashes them,
// for cleaners that run without a Manager (dind.Reap).
func WorkspacePlaces(stateDir string) (workspaces, trash []string) {
	return []string{filepath.Join(stateDir, "jobs"), filepath.Join(stateDir, memDir)},
		[]string{filepath.Join(stateDir, "trash"), filepath.Join(stateDir, memDir, memTrash)}
}

// workspaceDirs are the directories that hold workspaces.
func (m *Manager) workspaceDirs() []string {
	ws, _ := m.places()
	return ws
}

// places is WorkspacePlaces without the tmpfs's when workspaces are on
// disk only.
func (m *Manager) places() (workspaces, trash []string) {
	ws, trash := WorkspacePlaces(m.stateDir)
	if m.o.memBytes == 0 {
		return ws[:1:1], trash[:1:1]
	}
	return ws, trash
}

// MountedMemory returns the size of a tmpfs mounted at stateDir's place
// for memory workspaces (by the operator, or by an earlier run), or 0.
func MountedMemory(stateDir string) int64 {
	dir := filepath.Join(stateDir, memDir)
	if !isTmpfs(dir) {
		return 0
	}
	size, _, _ := tmpfsSpace(dir)
	return size
}

func isTmpfs(dir string) bool {
	if _, _, ok := tmpfsSpace(dir); !ok {
		return false
	}
	// A tmpfs further up (/tmp, say) is not ours: ours is mounted right
	// here.
	var a, b unix.Stat_t
	return unix.Stat(dir, &a) == nil && unix.Stat(filepath.Dir(dir), &b) == nil && a.Dev != b.Dev
}

// mountSource returns the source of the mount at dir, as mountinfo shows
// it ("" if dir is no mount point).
func mountSource(dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	src := ""
	for _, l := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 2 && unescapeMount(f[4]) == dir {
			src = g[1] // the last one is on top
		}
	}
	return src
}

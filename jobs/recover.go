package jobs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
)

// ErrRestarted is the error of builds that were running (or queued, and
// could not be resumed) when the gateway stopped without finishing them.
var ErrRestarted = errors.New("interrupted: gateway restarted")

// recover is the one place where what a previous run left is cleaned up,
// at start-up, before any job runs: every runner's own leftovers (see
// reapRunners), then the sandboxes' processes and mounts, then the store
// is loaded and workspaces of jobs that will not run again are removed.
// The caller holds the state directory, so no other gateway's sandboxes
// are touched.
func (m *Manager) recover() error {
	recs, err := m.store.All()
	if err != nil {
		return err
	}
	m.reapRunners(context.Background())
	if n := killSandboxes(append(m.workspaceDirs(), m.trashDirs()...)); n > 0 {
		m.o.logger.Warn("killed sandbox processes left by a previous run", "count", n)
	}
	// The workspaces' tmpfs itself stays, and so do the queued builds'
	// own: they hold their contexts.
	mem := filepath.Join(m.stateDir, memDir)
	stay := []string{mem}
	for _, r := range recs {
		if r.Status == api.StatusQueued && filepath.Dir(r.Workspace) == mem {
			stay = append(stay, r.Workspace)
		}
	}
	if err := unmountUnder(m.stateDir, stay...); err != nil {
		m.o.logger.Error("unmounting leftovers", "error", err)
	}
	sort.Slice(recs, func(a, b int) bool { return recs[a].CreatedAt.Before(recs[b].CreatedAt) })
	names := m.o.runnerNames()
	keep := map[string]bool{}
	var requeued, failed int
	for _, r := range recs {
		spec, verr := Validate(r.Spec, names, m.o.defaultRunner)
		if verr != nil {
			spec = &ValidSpec{BuildSpec: r.Spec}
		}
		j := jobFromRecord(r, spec)
		switch {
		case r.Status.Final():
			j.Log = closedLog(r.LogPath)
		case r.Status == api.StatusQueued && verr == nil && contextIntact(r.Workspace, spec.Dockerfile):
			lg, err := openLog(r.LogPath, m.o.logMax)
			if err != nil {
				return err
			}
			j.Log = lg
			lg.Printf("queued again after a gateway restart")
			keep[r.Workspace] = true
			if m.perBuild && m.inMemory(r.Workspace) {
				if size, _, ok := tmpfsSpace(r.Workspace); ok && isTmpfs(r.Workspace) {
					m.memReserved[r.Workspace] = size
				}
			}
			m.queue.push(j)
			requeued++
		default:
			msg := interrupted(r.Status, verr).Error()
			lg, err := openLog(r.LogPath, m.o.logMax)
			if err != nil {
				lg = closedLog(r.LogPath)
			}
			j.Log = lg
			lg.Printf("%s", msg)
			if c, ok := m.o.runners[j.Spec.Runner].(builder.Cleaner); ok && r.Status != api.StatusQueued {
				if err := c.Cleanup(context.Background(), j.ID); err != nil {
					m.o.logger.Error("cleaning up after an interrupted build", "job", j.ID, "error", err)
				}
			}
			// Its outcome is audited like any other.
			j.finish(api.StatusFailed, "", msg, m.o.now(), m.finished(j))
			lg.Close()
			if err := m.store.Put(j.record()); err != nil {
				return err
			}
			failed++
		}
		m.jobs[j.ID] = j
		m.remember(j)
	}
	// Workspaces of jobs that will not run again, and of uploads the
	// previous run never accepted, go at once.
	removed := 0
	for _, dir := range m.workspaceDirs() {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("reading workspaces: %w", err)
		}
		for _, e := range ents {
			ws := filepath.Join(dir, e.Name())
			if e.Name() == memTrash {
				continue // emptied by the reaper
			}
			if !keep[ws] {
				m.remove(context.Background(), m.o.defaultRunner, ws)
				removed++
			}
		}
	}
	if len(recs) > 0 {
		m.o.logger.Info("job store loaded", "jobs", len(recs), "requeued", requeued, "failed_interrupted", failed, "removed_workspaces", removed)
	}
	return nil
}

// interrupted is the error of a build found unfinished at start-up that
// will not run again: it was running, or it was queued but its spec
// (verr) or workspace did not survive.
func interrupted(was api.Status, verr error) error {
	switch {
	case was != api.StatusQueued:
		return ErrRestarted
	case verr != nil:
		return fmt.Errorf("%w and the queued build could not be resumed: %w", ErrRestarted, verr)
	default:
		return fmt.Errorf("%w and the queued build could not be resumed", ErrRestarted)
	}
}

// contextIntact reports whether a queued job's workspace still holds its
// extracted context and nothing a build started.
func contextIntact(ws, dockerfile string) bool {
	if ws == "" {
		return false
	}
	if _, err := os.Stat(filepath.Join(ws, "out")); err == nil {
		return false
	}
	fi, err := os.Stat(filepath.Join(ws, "context", dockerfile))
	return err == nil && fi.Mode().IsRegular()
}

// killSandboxes kills every process working in, rooted in or run from a
// workspace in one of dirs: sandboxes of a gateway that died without
// stopping them. (They normally die with it, through the parent-death
// signal; this covers what escaped.) It returns how many it killed.
func killSandboxes(dirs []string) int {
	var prefixes []string
	var devs []uint64
	for _, d := range dirs {
		prefixes = append(prefixes, d+"/")
		// A process in a mount namespace of its own shows a directory on
		// a file system other than the root's relative to that file
		// system's root ("/ID/root"), not under d; its device tells.
		tmpfs := []string{d}
		if ents, err := os.ReadDir(d); err == nil {
			for _, e := range ents {
				tmpfs = append(tmpfs, filepath.Join(d, e.Name())) // a build's own
			}
		}
		for _, t := range tmpfs {
			var st unix.Stat_t
			if isTmpfs(t) && unix.Stat(t, &st) == nil {
				devs = append(devs, st.Dev)
			}
		}
	}
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var killed []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		if procUnder(pid, prefixes, devs) {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	// Wait a little for them to go, so their workspaces can be removed.
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range killed {
		for time.Now().Before(deadline) {
			if unix.Kill(pid, 0) != nil || isZombie(pid) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return len(killed)
}

func procUnder(pid int, prefixes []string, devs []uint64) bool {
	for _, l := range []string{"cwd", "root", "exe"} {
		var st unix.Stat_t
		if len(devs) > 0 && unix.Stat(fmt.Sprintf("/proc/%d/%s", pid, l), &st) == nil && slices.Contains(devs, st.Dev) {
			return true
		}
		t, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, l))
		if err != nil {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(t, p) {
				return true
			}
		}
	}
	return false
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// unmountUnder detaches every mount of this mount namespace below dir,
// deepest first, but the mount points in keep.
func unmountUnder(dir string, keep ...string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if strings.HasPrefix(mp, dir+"/") && !slices.Contains(keep, mp) {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(a, b int) bool { return len(points[a]) > len(points[b]) })
	var firstErr error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("unmounting %s: %w", p, err)
		}
	}
	return firstErr
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
)

// ErrRestarted is the error of builds that were running (or queued, and
// could not be resumed) when the gateway stopped without finishing them.
var ErrRestarted = errors.New(api.ErrRestarted)

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
	// The queued builds' workspaces stay mounted: they hold their contexts.
	var queued []string
	for _, r := range recs {
		if r.Status == api.StatusQueued {
			queued = append(queued, r.Workspace)
		}
	}
	m.reapLeftovers(queued)
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
			m.ws.Adopt(r.Workspace)
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
	removed, err := m.removeWorkspacesBut(keep)
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		m.o.logger.Info("job store loaded", "jobs", len(recs), "requeued", requeued, "failed_interrupted", failed, "removed_workspaces", removed)
	}
	return nil
}

// reapLeftovers kills what runners and sandboxes of a previous run left,
// runners' leftovers outside the workspaces first (a daemon and its
// cgroups); the workspaces in keep stay mounted.
func (m *Manager) reapLeftovers(keep []string) {
	m.reapRunners(context.Background())
	n, err := m.ws.Recover(keep)
	if n > 0 {
		m.o.logger.Warn("killed sandbox processes left by a previous run", "count", n)
	}
	if err != nil {
		m.o.logger.Error("cleaning up after a previous run", "error", err)
	}
}

// removeWorkspacesBut removes every workspace but those in keep and those
// the reaper already emptied, and returns how many it removed.
func (m *Manager) removeWorkspacesBut(keep map[string]bool) (int, error) {
	removed := 0
	wsDirs, trash := m.ws.Dirs()
	for _, dir := range wsDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return removed, fmt.Errorf("reading workspaces: %w", err)
		}
		for _, e := range ents {
			ws := filepath.Join(dir, e.Name())
			if !slices.Contains(trash, ws) && !keep[ws] {
				m.remove(context.Background(), m.o.defaultRunner, ws)
				removed++
			}
		}
	}
	return removed, nil
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

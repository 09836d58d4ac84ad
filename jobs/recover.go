package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
)

// ErrRestarted is the error of builds that were running when the gateway
// stopped without finishing them.
const ErrRestarted = "interrupted: gateway restarted"

// recover loads the store at start-up. Nothing a previous run left may
// still run or stay mounted, so its sandboxes are killed first.
func (m *Manager) recover() error {
	recs, err := m.store.All()
	if err != nil {
		return err
	}
	// The queued builds' workspaces stay mounted: they hold their
	// contexts.
	var queued []string
	for _, r := range recs {
		if r.Status == api.StatusQueued {
			queued = append(queued, r.Workspace)
		}
	}
	n, err := m.ws.Recover(queued)
	if n > 0 {
		m.o.logger.Warn("killed sandbox processes left by a previous run", "count", n)
	}
	if err != nil {
		m.o.logger.Error("cleaning up after a previous run", "error", err)
	}
	sort.Slice(recs, func(a, b int) bool { return recs[a].CreatedAt.Before(recs[b].CreatedAt) })
	var names []string
	for n := range m.o.runners {
		names = append(names, n)
	}
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
			msg := ErrRestarted
			if r.Status == api.StatusQueued {
				msg = ErrRestarted + " and the queued build could not be resumed"
				if verr != nil {
					msg += ": " + verr.Error()
				}
			}
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
		if j.idemKey != "" {
			e := &idemEntry{done: make(chan struct{}), job: j}
			close(e.done)
			m.idem[j.Owner+"\x00"+j.idemKey] = e
		}
	}
	// Workspaces of jobs that will not run again, and of uploads the
	// previous run never accepted, go at once.
	removed := 0
	wsDirs, trash := m.ws.Dirs()
	for _, dir := range wsDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("reading workspaces: %w", err)
		}
		for _, e := range ents {
			ws := filepath.Join(dir, e.Name())
			if slices.Contains(trash, ws) {
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

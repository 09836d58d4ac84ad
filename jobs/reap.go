package jobs

import (
	"context"

	"github.com/buildgw/buildgw/builder"
)

// reapRunners has every runner that implements builder.Reaper clean up
// what its sandboxes of a previous run left outside the Manager's reach
// (a daemon and its cgroups, say), over every place a workspace may be,
// whether workspaces are now in memory or not. Failures are logged: a
// leftover must not keep the gateway from starting.
func (m *Manager) reapRunners(ctx context.Context) {
	dirs := append(m.layout.WorkspaceDirs(), m.layout.TrashDirs()...)
	for _, name := range m.o.runnerNames() {
		rp, ok := m.o.runners[name].(builder.Reaper)
		if !ok {
			continue
		}
		cleaned, err := rp.Reap(ctx, dirs)
		if err != nil {
			m.o.logger.Error("reaping what a runner's sandboxes left", "runner", name, "error", err)
		}
		if len(cleaned) > 0 {
			m.o.logger.Info("reaped what a runner's sandboxes left", "runner", name, "dirs", cleaned)
		}
	}
}

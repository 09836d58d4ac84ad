package dind

import (
	"context"

	"github.com/buildgw/buildgw/workspace"
)

// reap is what a Manager starting on stateDir has the runner do: Reap
// every place it keeps workspaces. Reap needs no configured runner.
func reap(stateDir string) ([]string, error) {
	l := workspace.NewLayout(stateDir)
	return (&Runner{}).Reap(context.Background(), append(l.WorkspaceDirs(), l.TrashDirs()...))
}

package kaniko

import (
	"fmt"

	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/runners/cgroup"
)

// sandboxProcs is where the processes of a running build are found: its
// cgroup, else the tree of the process the sandbox started as (its pid
// namespace's init descends from it, and adopts every orphan).
type sandboxProcs struct {
	grp *cgroup.Group
	top hostfs.Process
}

// BuildProcs returns the processes of job id's build while it runs; none
// before its sandbox starts or after it ends. The Manager reads what
// they hold open to count files deleted but still taking disk.
func (r *Runner) BuildProcs(id string) ([]int, error) {
	v, ok := r.running.Load(id)
	if !ok {
		return nil, nil
	}
	s := v.(*sandboxProcs)
	if s.grp != nil {
		return s.grp.Procs(), nil
	}
	return s.top.Tree()
}

// track makes job id's sandbox, started as process pid in grp (nil
// without limits), known to BuildProcs until the returned func is
// called.
func (r *Runner) track(id string, pid int, grp *cgroup.Group) (untrack func(), err error) {
	top, err := hostfs.Lookup(pid)
	if err != nil {
		return nil, fmt.Errorf("reading the sandbox's process: %w", err)
	}
	s := &sandboxProcs{grp: grp, top: top}
	r.running.Store(id, s)
	return func() { r.running.CompareAndDelete(id, s) }, nil
}

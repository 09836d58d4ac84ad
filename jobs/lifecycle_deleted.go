package jobs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/hostfs"
)

// procLister is a runner that tells which processes are a running
// build's (builder.Request.ID), so that the files they hold deleted
// count as the build's disk use. A runner that does not is trusted to
// bound its builds' disk some other way.
type procLister interface {
	BuildProcs(id string) ([]int, error)
}

// MaxDeletedFiles bounds the deleted files the disk watcher remembers
// for one build; a build holding more is stopped, so that what it costs
// the watcher stays bounded.
const MaxDeletedFiles = 4096

// errTooManyDeleted is why a build holding more than MaxDeletedFiles
// could not be measured.
var errTooManyDeleted = fmt.Errorf("its processes held more than %d deleted files", MaxDeletedFiles)

// deletedFiles follows the disk a build takes in regular files that no
// longer have a name but that its processes hold open or mapped: deleted
// while open, or made with O_TMPFILE. A walk of the workspace never sees
// them, yet they fill its disk until the last holder lets go.
//
// Each file counts, until the build ends, the most it was seen to take:
// a file hidden from later scans (its descriptor sent in flight into a
// unix socket and closed, say) still counts. That over-counts a build
// that wrote a large deleted temporary file and closed it, which errs on
// the safe side.
type deletedFiles struct {
	procs procLister // nil: the runner does not tell
	id    string
	dir   string // the workspace, whose filesystem counts
	dev   uint64
	seen  map[hostfs.Inode]int64
	bytes int64 // the sum of seen
}

// deletedFiles returns the follower of j's deleted files.
func (m *Manager) deletedFiles(j *Job) *deletedFiles {
	pl, _ := m.o.runners[j.Spec.Runner].(procLister)
	return &deletedFiles{procs: pl, id: j.ID, dir: j.workspace, seen: map[hostfs.Inode]int64{}}
}

// measure reads what the build's processes hold now and returns the
// bytes of every deleted file seen so far, each at its most.
func (d *deletedFiles) measure() (int64, error) {
	if d.procs == nil {
		return 0, nil
	}
	if d.dev == 0 {
		var st unix.Stat_t
		if err := unix.Stat(d.dir, &st); err != nil {
			return d.bytes, fmt.Errorf("measuring %s: %w", d.dir, err)
		}
		d.dev = st.Dev
	}
	pids, err := d.procs.BuildProcs(d.id)
	if err != nil {
		return d.bytes, fmt.Errorf("listing the build's processes: %w", err)
	}
	held, err := hostfs.UnlinkedHeld(pids, d.dev, MaxDeletedFiles)
	if errors.Is(err, hostfs.ErrTooManyUnlinked) {
		return d.bytes, errTooManyDeleted
	}
	if err != nil {
		return d.bytes, fmt.Errorf("reading the files the build's processes hold: %w", err)
	}
	for ino, n := range held {
		old, ok := d.seen[ino]
		if !ok && len(d.seen) >= MaxDeletedFiles {
			return d.bytes, errTooManyDeleted
		}
		if n > old {
			d.seen[ino] = n
			d.bytes += n - old
		}
	}
	return d.bytes, nil
}

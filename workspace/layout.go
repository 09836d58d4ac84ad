package workspace

import "path/filepath"

// Layout is every path the gateway owns under its state directory, built
// once from state_dir (NewLayout) and passed to whatever keeps files
// there, so that no one spells the names out again.
type Layout struct {
	// Root is the state directory itself.
	Root string
	// Jobs holds the workspaces on disk, one directory per build.
	Jobs string
	// Logs holds the build logs, ID.log.
	Logs string
	// Trash is where workspaces on disk go to be removed: a rename away.
	Trash string
	// Mem is the mount point of the workspaces in memory: a tmpfs per
	// build below it, or one tmpfs for all (see Workspaces).
	Mem string
	// MemTrash is where workspaces on a shared tmpfs go to be removed: a
	// rename within the tmpfs.
	MemTrash string
	// LayerCache is kaniko's per-tenant layer cache.
	LayerCache string
	// ResultCache is kaniko's per-tenant cache of built images.
	ResultCache string
	// BaseImages is the store of base images the gateway pulls itself.
	BaseImages string
	// JobStore is the job database.
	JobStore string
	// BackupSocket is where a running gateway hands out copies of the job
	// store, in a directory only the gateway's user enters.
	BackupSocket string
}

// NewLayout returns the layout of the state directory dir.
func NewLayout(dir string) Layout {
	dir = filepath.Clean(dir)
	return Layout{
		Root:        dir,
		Jobs:        filepath.Join(dir, "jobs"),
		Logs:        filepath.Join(dir, "logs"),
		Trash:       filepath.Join(dir, "trash"),
		Mem:         filepath.Join(dir, "mem"),
		MemTrash:    filepath.Join(dir, "mem", ".trash"),
		LayerCache:  filepath.Join(dir, "layer-cache"),
		ResultCache: filepath.Join(dir, "result-cache"),
		BaseImages:  filepath.Join(dir, "base-images"),
		JobStore:    filepath.Join(dir, "jobs.db"),

		BackupSocket: filepath.Join(dir, "admin", "backup.sock"),
	}
}

// Log returns the path of build id's log.
func (l Layout) Log(id string) string { return filepath.Join(l.Logs, id+".log") }

// WorkspaceDirs are the directories that may hold workspaces: on disk,
// and in memory.
func (l Layout) WorkspaceDirs() []string { return []string{l.Jobs, l.Mem} }

// TrashDirs are the directories workspaces are trashed to.
func (l Layout) TrashDirs() []string { return []string{l.Trash, l.MemTrash} }

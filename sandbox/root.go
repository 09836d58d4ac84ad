package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Root is a job root on the host: the directory the init pivots into
// (EnvRoot), holding the executor, the CA bundle and the empty mount
// points of everything else.
type Root struct {
	// Dir is the job root's host path. It must not exist yet.
	Dir string
	// Owner is the sandbox user, to whom the root's directories are
	// handed, when the runner runs as root; nil when the sandbox runs as
	// the runner's own user.
	Owner *syscall.Credential
	// Executor is the runner's executor (cmd/kaniko-executor).
	Executor string
	// BindExecutor: the init binds Executor read-only over an empty file
	// (EnvExecutor) instead of the job root holding a link or a copy. The
	// sandbox user must be able to reach Executor.
	BindExecutor bool
	// SystemCAs is the host's CA bundle, and ExtraCAs PEM roots added to it
	// (see WriteCABundle).
	SystemCAs string
	ExtraCAs  []byte
}

// RootIn returns where the kaniko runner puts the job root of the job
// whose workspace is ws (next to its context and output), for tests and
// benchmarks that look at it.
func RootIn(ws string) string { return filepath.Join(ws, "root") }

// dirs are the job root's directories, parents first: the mount points
// the init binds into and the directories kaniko expects.
var dirs = []string{"/", Dev, Proc, Workspace, OldRoot, "/kaniko", Output, BaseImages, LayerCache, SharedLayerCache, "/kaniko/ssl", CertDir, DockerConfig}

// Path returns the host path of p, a path inside the sandbox.
func (r Root) Path(p string) string { return filepath.Join(r.Dir, p) }

// Start returns the program the sandbox is started with: the runner's own
// executor when it is bound in, else the job root's copy or link.
func (r Root) Start() string {
	if r.BindExecutor {
		return r.Executor
	}
	return r.Path(Executor)
}

// Prepare lays out the job root: its directories, handed to Owner, the
// executor and the CA bundle. No registry credential of any kind goes in:
// DockerConfig stays empty.
func (r Root) Prepare() error {
	for _, d := range dirs {
		p := r.Path(d)
		if err := os.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("preparing job root: %w", err)
		}
		if err := r.chown(p); err != nil {
			return err
		}
	}
	// When the runner is root, the sandbox gets the runner's executor
	// itself, bound read-only over an empty file: it is owned by a user
	// that does not exist inside the sandbox, so no build step can alter
	// it, and it costs nothing (a hard link cannot reach a workspace on
	// another file system, a tmpfs). That needs the sandbox user to reach
	// it; else a hard link, else a copy. Without Owner the sandbox's root
	// would own a link, and could alter the runner's executor through it:
	// each job gets its own copy.
	exe := r.Path(Executor)
	switch {
	case r.BindExecutor:
		if err := os.WriteFile(exe, nil, 0o755); err != nil {
			return fmt.Errorf("preparing job root: %w", err)
		}
	case r.Owner != nil && os.Link(r.Executor, exe) == nil:
	default:
		if err := CopyFile(r.Executor, exe, 0o755); err != nil {
			return fmt.Errorf("installing executor: %w", err)
		}
	}
	if err := WriteCABundle(r.Path(CABundle), r.SystemCAs, r.ExtraCAs); err != nil {
		return fmt.Errorf("installing CA certificates: %w", err)
	}
	return nil
}

// chown hands p to Owner; without Owner it does nothing.
func (r Root) chown(p string) error {
	if r.Owner == nil {
		return nil
	}
	if err := os.Lchown(p, int(r.Owner.Uid), int(r.Owner.Gid)); err != nil {
		return fmt.Errorf("handing %s to the sandbox user: %w", p, err)
	}
	return nil
}

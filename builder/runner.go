// Package builder holds the job model of buildgw: specs and their validation,
// the queue and scheduler that run jobs on sandboxed runners, the job logs,
// and the gateway-side push of what a runner built.
package builder

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Runner builds one job inside a sandbox of its own.
//
// A Runner never sees push credentials: it leaves the image in
// Request.OutputDir and the gateway pushes it.
type Runner interface {
	// Build runs the build described by req, writing the build's output, line
	// by line, to log. It returns the built image, read from files under
	// req.OutputDir, which stay until the Manager removes the workspace.
	// Before it returns, whatever the outcome, every process it started
	// must be gone and nothing may stay mounted under the workspace; files
	// it leaves there are removed by the Manager (through Remover if the
	// runner implements it).
	Build(ctx context.Context, req *Request, log io.Writer) (v1.Image, error)
}

// Checker is implemented by runners that depend on something the host may
// lack (a binary, a user namespace). Available reports why the runner cannot
// be used, or nil.
type Checker interface {
	Available(ctx context.Context) error
}

// Remover is implemented by runners whose sandboxes can leave files that
// the gateway's own user cannot delete (files owned by subordinate uids).
// The Manager uses it instead of os.RemoveAll for the job's workspace.
type Remover interface {
	RemoveAll(ctx context.Context, dir string) error
}

// Cleaner is implemented by runners that keep host state per job outside
// the workspace (a cgroup, say). At start-up the Manager calls Cleanup for
// each job a previous run left unfinished.
type Cleaner interface {
	Cleanup(ctx context.Context, id string) error
}

// Request is one build, as a Runner sees it. All paths are absolute host
// paths inside the job's workspace.
type Request struct {
	// ID is the job's ID, for naming sandbox state and logging.
	ID string
	// Workspace is the job's own directory. The runner may create anything
	// it needs under it; nothing outside it.
	Workspace string
	// ContextDir holds the extracted build context.
	ContextDir string
	// Dockerfile is the Dockerfile's path relative to ContextDir, already
	// checked to stay inside it.
	Dockerfile string
	BuildArgs  map[string]string
	Target     string
	Labels     map[string]string
	// OutputDir is where the runner leaves the image as an OCI layout.
	OutputDir string
	// InsecureRegistries are registries that FROM may reach over plain HTTP.
	InsecureRegistries []string
	// PullCredentials are the read-only credentials, by registry host, that
	// the configuration explicitly allows inside sandboxes for pulling base
	// images. Push credentials are never among them.
	PullCredentials map[string]Credential
	// ExtraCAs is PEM roots the sandbox trusts besides the system's, for
	// registries with a private CA.
	ExtraCAs []byte
}

// Credential is a registry username and password.
type Credential struct {
	Username string
	Password string
}

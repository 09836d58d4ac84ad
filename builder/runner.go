// Package builder is the contract between the job scheduler (package jobs)
// and the runners that build in sandboxes: Runner and the optional
// capabilities a runner may have, and the Request it is given. Every runner
// passes the shared suite in builder/runnertest.
package builder

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/netmode"
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

// Reaper is implemented by runners whose sandboxes keep host state that
// outlives a gateway killed mid-build and that the Manager's own clean-up
// (killing processes working in a workspace, unmounting under the state
// directory, removing workspaces) does not reach: a per-job daemon with
// the cgroups and mounts of its own namespace, say. At start-up, before
// any job runs or any leftover workspace is removed, the Manager calls
// Reap once with every directory that holds workspaces, live or trashed.
// Its caller holds the state directory, so Reap never touches the
// sandboxes of another gateway. It returns what it cleaned, for the log.
type Reaper interface {
	Reap(ctx context.Context, dirs []string) (cleaned []string, err error)
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
	// Analysis is the Dockerfile as analyzed, with BuildArgs and Target,
	// when the build was accepted: what it pulls, its stages, what it
	// fetches from the network. Nobody parses the Dockerfile again; a
	// runner without it takes nothing about the Dockerfile for granted
	// (it caches nothing, say).
	Analysis  *dockerfile.Analysis
	BuildArgs map[string]string
	Target    string
	Labels    map[string]string
	// OutputDir is where the runner leaves the image as an OCI layout.
	OutputDir string
	// InsecureRegistries are registries that FROM may reach over plain HTTP.
	InsecureRegistries []string
	// ExtraCAs is PEM roots the sandbox trusts besides the system's, for
	// registries with a private CA.
	ExtraCAs []byte
	// Tenant names whose layer and result caches the build may use and
	// fill (Job.Tenant, from the policy's cache.scope); builds of
	// different tenants never share cached layers. Empty: no cache.
	Tenant string
	// NoCache makes the build use no cache of earlier builds (layers or
	// results) and leave nothing in one.
	NoCache bool
	// Network is the network RUN steps get: netmode.None (loopback only)
	// or netmode.Egress (outbound, but not to the gateway's host or
	// link-local addresses). Empty: the runner's default.
	Network netmode.Mode
	// BaseImages are the images the build pulls, fetched by the gateway
	// before the build (see BasePreparer); nil if none were. A runner that
	// uses them needs neither network nor credentials to pull.
	BaseImages *BaseImages
	// CheckBase, if set, is asked by the BasePreparer about each image a
	// stage is built on, with the ONBUILD triggers of its config, before
	// any of its layers is fetched (see WithBaseCheck). Runners ignore it.
	CheckBase func(image string, onbuild []string) error
}

// BasePreparer fetches the images a build pulls (each stage's FROM, COPY
// --from) before its runner starts, with the gateway's own credentials.
type BasePreparer interface {
	// Prepare resolves the images that req's Dockerfile pulls, after ARG
	// substitution, fetches them and leaves them under req.Workspace, read
	// only, for the runner.
	Prepare(ctx context.Context, req *Request, log io.Writer) (*BaseImages, error)
}

// BaseImages are a build's pulled images, as resolved before it ran.
type BaseImages struct {
	// Layout is an OCI image layout (host path, under the workspace)
	// holding every image, each named in index.json by the annotation
	// org.opencontainers.image.ref.name with its full reference.
	Layout string
	Images []BaseImage
	// Final is the image the built image is based on, or nil (scratch).
	Final *BaseImage
}

// BaseImage is one image a build pulls.
type BaseImage struct {
	// Name is the full reference the Dockerfile names, after ARG
	// substitution.
	Name string
	// Digest is the manifest digest Name resolved to.
	Digest string
}

// Package sandbox is the contract between the rootless kaniko runner on
// the host (runners/kaniko) and the init that runs inside its sandbox
// before kaniko (runners/kaniko/sandboxinit, linked into the executor):
// the job root both sides lay out and mount (Root), the environment that
// describes it, and the file descriptors handed over at start (FD). Both
// sides take every name from here, so that they cannot drift.
//
// It also holds what any runner puts into a sandbox's tree: the CA bundle
// (WriteCABundle) and files copied in (CopyFile).
package sandbox

// Paths inside the job root, as the sandbox sees them once it has pivoted
// into it.
const (
	// Workspace is the build context, mounted read-only.
	Workspace = "/workspace"
	// Output is where kaniko writes its OCI layout.
	Output = "/kaniko/out"
	// BaseImages holds the images the gateway fetched for the build: an
	// OCI layout, mounted read-only.
	BaseImages = "/kaniko/base"
	// LayerCache holds the build's kaniko layer cache, one OCI layout per
	// cache key.
	LayerCache = "/kaniko/cache"
	// SharedLayerCache holds the tenant's shared cache entries, read-only.
	SharedLayerCache = "/kaniko/cache-shared"
	// Executor is the executor in the job root: a copy or link of the
	// gateway's, or an empty file the init binds the gateway's over
	// (EnvExecutor).
	Executor = "/kaniko/executor"
	// CertDir is the sandbox's SSL_CERT_DIR, and CABundle the bundle in it.
	CertDir  = "/kaniko/ssl/certs"
	CABundle = CertDir + "/ca-certificates.crt"
	// DockerConfig is the sandbox's DOCKER_CONFIG; the runner leaves it
	// empty (no registry credential of any kind).
	DockerConfig = "/kaniko/.docker"
	// Dev and Proc are mounted afresh by the init.
	Dev  = "/dev"
	Proc = "/proc"
	// OldRoot is where pivot_root puts the host's root, until the init
	// detaches it.
	OldRoot = "/.oldroot"
)

// Environment variables through which the runner describes the sandbox to
// the init. The init removes them before kaniko starts.
const (
	EnvRoot    = "BUILDGW_SANDBOX_ROOT"    // the job root to pivot into (a host path)
	EnvContext = "BUILDGW_SANDBOX_CONTEXT" // mounted read-only at Workspace
	EnvOutput  = "BUILDGW_SANDBOX_OUTPUT"  // mounted at Output
	EnvBase    = "BUILDGW_SANDBOX_BASE"    // mounted read-only at BaseImages
	EnvCache   = "BUILDGW_SANDBOX_CACHE"   // the build's layer cache, mounted at LayerCache
	// EnvSharedCache, if set, is the tenant's shared layer cache, mounted
	// read-only at SharedLayerCache. EnvCache is then the build's own
	// cache directory, whose entries link into it.
	EnvSharedCache = "BUILDGW_SANDBOX_SHARED_CACHE"
	// EnvRemove asks the init to remove this tree and exit.
	EnvRemove = "BUILDGW_SANDBOX_REMOVE"
	// EnvExecutor, if set, is the gateway's executor, bound read-only at
	// Executor.
	EnvExecutor = "BUILDGW_SANDBOX_EXECUTOR"
	// EnvHold names the program to become once the runner writes a byte
	// to FD Release: the runner first moves the process into the build's
	// cgroup, so that everything the build starts is inside it.
	EnvHold = "BUILDGW_SANDBOX_HOLD"
	// EnvNetwork is the sandbox's network mode (package netmode). With
	// egress the init tells the runner through FD InNamespace that its
	// namespaces exist, and waits on FD NetworkReady until the runner has
	// set up the network.
	EnvNetwork = "BUILDGW_SANDBOX_NETWORK"
	// EnvProcBind, set to "1", has the init bind the proc it finds (with
	// its submounts) at Proc instead of mounting one of its own pid
	// namespace. Inside a container (the kubernetes runner's Pod) the
	// kernel refuses a fresh proc: the runtime masks paths of the
	// container's proc with mounts, and a new proc would reveal them
	// (EPERM). The build then sees the Pod's processes too (their pids
	// and command lines), but cannot read their memory, environment or
	// root: they are outside its user namespace.
	EnvProcBind = "BUILDGW_SANDBOX_PROC_BIND"
)

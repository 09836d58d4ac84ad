package sandboxinit

import "github.com/buildgw/buildgw/sandbox/sockfilter"

// installFilter installs the sandbox's seccomp filter (package sockfilter)
// on every thread of the process: the second wall behind dropNetRaw, and
// the only one against mounts. pivot has laid out the root by then; kaniko
// and its RUN steps mount nothing, and as root of the sandbox's user
// namespace they could otherwise remount its read-only binds (the
// context, the shared layer cache) writable.
func installFilter() error {
	return sockfilter.Install(sockfilter.DenyMounts)
}

package sandboxinit

import "github.com/buildgw/buildgw/sandbox/sockfilter"

// installFilter installs the sandbox's seccomp filter (package sockfilter)
// on every thread of the process: the second wall behind dropNetRaw.
func installFilter() error {
	return sockfilter.Install()
}

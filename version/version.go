// Package version reports what was built. Release builds set it at link
// time:
//
//	-ldflags "-X github.com/buildgw/buildgw/version.Version=v1.2.3
//	          -X github.com/buildgw/buildgw/version.commit=$(git rev-parse HEAD)"
//
// (the commit too, since builds from an exported tree, such as the
// Dockerfile's, carry no VCS information).
package version

import "runtime/debug"

// Version is the release version; "dev" for local builds.
var Version = "dev"

// commit overrides the VCS revision when set with -ldflags -X.
var commit = ""

// kanikoModule is the module the executor is built from.
const kanikoModule = "github.com/GoogleContainerTools/kaniko"

// pinnedKaniko is kaniko's version in go.mod, for the binaries that do not
// link kaniko (buildgw runs the executor as a separate binary). A test
// keeps it equal to go.mod.
const pinnedKaniko = "v1.24.0"

// Kaniko returns the kaniko module version pinned in this build.
func Kaniko() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == kanikoModule {
				return d.Version
			}
		}
	}
	return pinnedKaniko
}

// Commit returns the commit set at link time, else the VCS revision
// recorded by the Go toolchain, else "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

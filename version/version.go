// Package version reports what was built: set at link time with
// -ldflags "-X github.com/buildgw/buildgw/version.Version=...".
package version

import "runtime/debug"

// Version is the release version; "dev" for local builds.
var Version = "dev"

// Kaniko returns the kaniko module version pinned in this build.
func Kaniko() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/GoogleContainerTools/kaniko" {
				return d.Version
			}
		}
	}
	return "unknown"
}

// Commit returns the VCS revision recorded by the Go toolchain.
func Commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

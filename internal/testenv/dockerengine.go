package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// DockerEngine returns the current Docker engine that scripts/setup
// --test builds into .tools/docker from the Go module proxy: dockerd
// (v28, whose BuildKit is current) and buildx, which drives it. The dind
// runner's tests and compat's dind column build with them; Debian's
// docker.io (20.10, the gateway's default) has tests of its own. Missing
// binaries fail the test, naming the command that builds them.
func DockerEngine(tb testing.TB) (dockerd, buildx string) {
	tb.Helper()
	dir := filepath.Join(ModuleRoot(tb), ".tools", "docker")
	dockerd, buildx = filepath.Join(dir, "dockerd"), filepath.Join(dir, "buildx")
	for _, p := range []string{dockerd, buildx} {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("%s not found: run scripts/setup --test (it builds dockerd and buildx from the Go module proxy)", p)
		}
	}
	return dockerd, buildx
}

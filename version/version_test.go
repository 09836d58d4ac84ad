package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPinnedKaniko keeps pinnedKaniko equal to the version go.mod requires.
func TestPinnedKaniko(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", kanikoModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", kanikoModule, err)
	}
	if got := strings.TrimSpace(string(out)); got != pinnedKaniko {
		t.Errorf("pinnedKaniko = %s, go.mod requires %s: update version/version.go", pinnedKaniko, got)
	}
}

// TestLinkerStamp builds a program that prints what the package reports,
// stamped the way the release script and the Dockerfile stamp binaries.
func TestLinkerStamp(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	prog := `package main

import (
	"fmt"

	"github.com/buildgw/buildgw/version"
)

func main() { fmt.Println(version.Version, version.Commit(), version.Kaniko()) }
`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	const pkg = "github.com/buildgw/buildgw/version"
	cmd := exec.Command("go", "run", "-ldflags=-X "+pkg+".Version=v9.8.7 -X "+pkg+".commit=abc123", src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "v9.8.7 abc123 "+pinnedKaniko; got != want {
		t.Errorf("stamped program printed %q, want %q", got, want)
	}
}

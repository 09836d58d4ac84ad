package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestExecutorImage(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "kaniko-executor")
	if err := os.WriteFile(exe, []byte("not really an executor"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, prof := filepath.Join(dir, "img.tar"), filepath.Join(dir, "seccomp.json")
	var stdout bytes.Buffer
	root := New()
	root.SetOut(&stdout)
	root.SetArgs([]string{"executor-image", "--executor", exe, "--ca-bundle", "", "-t", "registry.example/buildgw/exec:1", "-o", out, "--seccomp-profile", prof})
	if err := root.Execute(); err != nil {
		t.Fatalf("executor-image: %v", err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("reading %s: %v", out, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(stdout.String()); got != d.String() {
		t.Errorf("executor-image printed %q, want the image's digest %q", got, d)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User == "" || strings.HasPrefix(cf.Config.User, "0") {
		t.Errorf("image user = %q, want a non-root uid", cf.Config.User)
	}
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Syscalls []struct{ Names []string } `json:"syscalls"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("seccomp profile: %v", err)
	}
	found := false
	for _, s := range p.Syscalls {
		for _, n := range s.Names {
			found = found || n == "pivot_root"
		}
	}
	if !found {
		t.Errorf("seccomp profile does not allow pivot_root, which the sandbox needs")
	}
}

package testbuildkit

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/internal/testenv"
)

// The reference builder builds from a loopback registry's base, with no
// network in RUN, and pushes back to it.
func TestBuildPush(t *testing.T) {
	d := Start(t)
	host := testenv.Registry(t)
	base := testenv.Busybox(t, host)

	dir := t.TempDir()
	df := "FROM " + base + "\nENV GREETING=hi\nRUN echo built > /built && tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /net\nCMD [\"cat\", \"/built\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	ref := host + "/ref/smoke:1"
	if out, err := d.Build(ctx, Build{Context: dir, Push: ref}); err != nil {
		t.Fatalf("Build = %v\n%s", err, out)
	}

	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cfg.Config.Env, "GREETING=hi") || !slices.Equal(cfg.Config.Cmd, []string{"cat", "/built"}) {
		t.Errorf("config Env = %v, Cmd = %v, want GREETING=hi and [cat /built]", cfg.Config.Env, cfg.Config.Cmd)
	}
	files := map[string]string{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "built" || h.Name == "net" {
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
	if files["built"] != "built\n" {
		t.Errorf("/built = %q, want %q", files["built"], "built\n")
	}
	// No network in RUN: the step's namespace has loopback alone.
	if got := files["net"]; got != "lo\n" {
		t.Errorf("interfaces in RUN = %q, want only lo", got)
	}
}

package kaniko

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/dockerfile"
)

// analyze is the Analysis of a Dockerfile that must be valid, as the
// Manager makes it when it accepts a build.
func analyze(t *testing.T, src string, args map[string]string, target string) *dockerfile.Analysis {
	t.Helper()
	a, err := dockerfile.Analyze([]byte(src), args, target)
	if err != nil {
		t.Fatalf("Analyze(%q) = %v", src, err)
	}
	return a
}

// TestLayerCacheVolume builds Dockerfiles with VOLUME with kaniko's layer
// cache, filled and then used, and with no_cache: all must be the same
// image. kaniko's cache pass runs VOLUME ahead of the RUN steps before it;
// upstream, VOLUME made its directory, so with the cache a directory a RUN
// makes already existed ("File exists") and a trailing VOLUME's directory
// leaked into the image. Patch 0015 makes VOLUME only record the volume.
func TestLayerCacheVolume(t *testing.T) {
	exe, regHost, base, store, cacheDir := cacheTestEnv(t)
	r, err := New(WithExecutor(exe), WithLayerCache(filepath.Join(cacheDir, "layers")))
	if err != nil {
		t.Fatal(err)
	}
	// A base image whose ONBUILD triggers hold the same sequence: kaniko
	// runs them as the first steps of a stage built on it.
	onbuild := pushOnbuildImage(t, base, "RUN mkdir /foo && echo hi > /foo/hi", "VOLUME /foo/bar")
	for _, tc := range []struct{ name, base, dockerfile string }{
		{"mkdir then volume under it", base, "ARG BASE\nFROM ${BASE}\nRUN mkdir /foo && echo hi > /foo/hi\nVOLUME /foo/bar\nRUN echo after > /after\n"},
		{"trailing volume", base, "ARG BASE\nFROM ${BASE}\nRUN echo a > /a\nVOLUME /trailing\n"},
		{"onbuild volume of the base image", onbuild, "ARG BASE\nFROM ${BASE}\nRUN echo after > /after\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build := func(noCache bool) (v1.Image, string) {
				req := netRequest(t, r, tc.dockerfile, "", map[string]string{"BASE": tc.base}, regHost)
				req.Tenant = "namespace_path:team-a"
				req.NoCache = noCache
				return buildWithBases(t, r, store, req)
			}
			filled, _ := build(false)
			cached, log := build(false)
			if !strings.Contains(log, "Using caching version of cmd") {
				t.Errorf("second build did not take its steps from the layer cache:\n%s", log)
			}
			plain, _ := build(true)
			for _, img := range []v1.Image{filled, cached} {
				if got, want := flatten(t, img), flatten(t, plain); got != want {
					t.Errorf("filesystem with the layer cache:\n%s\nwant (no_cache):\n%s", got, want)
				}
				if got, want := runConfig(t, img), runConfig(t, plain); got != want {
					t.Errorf("config with the layer cache = %s, want (no_cache) %s", got, want)
				}
			}
		})
	}
}

// flatten lists an image's filesystem, one line per entry: name, type,
// mode, owner, link target and content digest; no times.
func flatten(t *testing.T, img v1.Image) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var b strings.Builder
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %c %o %d:%d %s %s\n", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, hex.EncodeToString(sum.Sum(nil))[:12])
	}
}

// runConfig is the image's run configuration (volumes, env, cmd ...) as
// JSON.
func runConfig(t *testing.T, img v1.Image) string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cf.Config)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pushOnbuildImage pushes base with the ONBUILD triggers given, and
// returns its reference.
func pushOnbuildImage(t *testing.T, base string, triggers ...string) string {
	t.Helper()
	baseRef, err := name.ParseReference(base, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(baseRef)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.OnBuild = triggers
	if img, err = mutate.Config(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(strings.TrimSuffix(base, "busybox:latest")+"onbuild:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

package kubernetes

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/buildgw/buildgw/runners/kubernetes/podinit"
)

// ImageUser is the uid and gid the executor image runs as, and the
// runner's default Pod user: no user of the node.
const ImageUser = 10001

// ExecutorImage returns the image a build's Pod runs: the static
// executor (cmd/kaniko-executor, built with CGO_ENABLED=0) at
// podinit.Executor, owned by root and read-only to the Pod's user, the CA
// bundle at caBundle (may be empty: no system roots), and the Pod's
// scratch directory. Nothing else: no shell, no libraries, no credential.
// The image is reproducible: the same files give the same digest.
func ExecutorImage(executor, caBundle string) (v1.Image, error) {
	exe, err := os.ReadFile(executor)
	if err != nil {
		return nil, fmt.Errorf("reading the executor: %w", err)
	}
	var cas []byte
	if caBundle != "" {
		if cas, err = os.ReadFile(caBundle); err != nil {
			return nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "kaniko/", "buildgw/", "tmp/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{
		{podinit.SystemCAs[1:], 0o644, cas},
		{podinit.Executor[1:], 0o755, exe},
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		return nil, fmt.Errorf("making the executor layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{podinit.Executor}
	cf.Config.User = fmt.Sprintf("%d:%d", ImageUser, ImageUser)
	cf.Config.WorkingDir = podinit.WorkDir
	return mutate.ConfigFile(img, cf)
}

// WriteExecutorImage writes img as a tarball named ref (docker save's
// format, which ctr images import, docker load and crane push take).
func WriteExecutorImage(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("executor image name: %w", err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("writing the executor image: %w", err)
	}
	return nil
}

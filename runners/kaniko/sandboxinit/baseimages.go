package sandboxinit

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/buildgw/buildgw/sandbox"
)

// refNameAnnotation names an image in the layout's index.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// envSealed marks the executor started inside the sandbox's root.
const envSealed = "BUILDGW_SANDBOX_SEALED"

// Sealed reports whether the executor runs inside a sandbox's root that
// was handed base images: images then come only from sandbox.BaseImages.
func Sealed() bool { return os.Getenv(envSealed) == "1" }

// RetrieveImage returns the image called ref (as a Dockerfile names it)
// from the handed-in layout, and an error naming ref for any image the
// gateway did not fetch for this build: a sandbox never pulls.
func RetrieveImage(ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("base image %q: %w", ref, err)
	}
	p, err := layout.FromPath(sandbox.BaseImages)
	if err != nil {
		return nil, fmt.Errorf("base image %s: no images were handed to this build: %w", r.Name(), err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", r.Name(), err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", r.Name(), err)
	}
	for _, d := range m.Manifests {
		if d.Annotations[refNameAnnotation] == r.Name() {
			return p.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("base image %s was not fetched by the gateway for this build (builds cannot pull images themselves)", r.Name())
}

// Images returns every handed-in image under each name a Dockerfile may
// use for it ("alpine", "alpine:latest", "docker.io/library/alpine", ...,
// besides the full reference), for kaniko paths that fetch without going
// through image.RetrieveRemoteImage (COPY --from=IMAGE).
func Images() (map[string]v1.Image, error) {
	p, err := layout.FromPath(sandbox.BaseImages)
	if err != nil {
		return nil, nil // no images handed in: nothing to serve
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading the handed-in images: %w", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the handed-in images: %w", err)
	}
	out := map[string]v1.Image{}
	for _, d := range m.Manifests {
		ref := d.Annotations[refNameAnnotation]
		if ref == "" {
			continue
		}
		img, err := p.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("handed-in image %s: %w", ref, err)
		}
		for _, n := range Spellings(ref) {
			out[n] = img
		}
	}
	return out, nil
}

// Spellings returns the ways a Dockerfile may write the image reference
// ref (as name.Reference.Name gives it): with and without Docker Hub's
// registry and "library/", with and without ":latest".
func Spellings(ref string) []string {
	names := []string{ref}
	if rest, ok := strings.CutPrefix(ref, name.DefaultRegistry+"/"); ok {
		names = append(names, "docker.io/"+rest, rest)
		if short, ok := strings.CutPrefix(rest, "library/"); ok {
			names = append(names, short)
		}
	}
	if strings.HasSuffix(ref, ":latest") {
		for _, n := range names {
			names = append(names, strings.TrimSuffix(n, ":latest"))
		}
	}
	return names
}

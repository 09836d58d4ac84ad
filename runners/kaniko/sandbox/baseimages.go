package sandbox

import (
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// BaseImages is where the job root holds the images the gateway fetched
// for the build: an OCI layout, mounted read-only.
const BaseImages = "/kaniko/base"

// refNameAnnotation names an image in the layout's index.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// envSealed marks the executor started inside the sandbox's root.
const envSealed = "BUILDGW_SANDBOX_SEALED"

// Sealed reports whether the executor runs inside a sandbox's root that
// was handed base images: images then come only from BaseImages.
func Sealed() bool { return os.Getenv(envSealed) == "1" }

// RetrieveImage returns the image called ref (as a Dockerfile names it)
// from the handed-in layout, and an error naming ref for any image the
// gateway did not fetch for this build: a sandbox never pulls.
func RetrieveImage(ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("base image %q: %w", ref, err)
	}
	p, err := layout.FromPath(BaseImages)
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

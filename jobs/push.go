// Pushing: the gateway, never the sandbox, sends a built image to its
// registries.

package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
)

// Pusher sends a built image to a registry with the gateway's own
// credentials. It tells logf, the build log, what it retries and why.
type Pusher interface {
	Push(ctx context.Context, img v1.Image, dst name.Tag, logf func(format string, args ...any)) error
}

// annotateBase records in the image's manifest what it was built from, as
// the OCI image spec's pre-defined annotations say.
func annotateBase(img v1.Image, base builder.BaseImage) v1.Image {
	return mutate.Annotations(img, map[string]string{
		"org.opencontainers.image.base.name":   base.Name,
		"org.opencontainers.image.base.digest": base.Digest,
	}).(v1.Image)
}

// push sends img, built for j, to each of j's tags, first recording in
// its manifest the base image it was built on. It returns the digest.
func (m *Manager) push(ctx context.Context, j *Job, img v1.Image, bases *builder.BaseImages) (string, error) {
	if bases != nil && bases.Final != nil {
		img = annotateBase(img, *bases.Final)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("reading built image: %w", err)
	}
	if j.setStatus(api.StatusPushing, m.o.now()) {
		m.saveLogged(j)
	}
	for _, t := range j.Spec.Tags {
		j.Log.Printf("pushing %s@%s", t, digest)
		start := time.Now()
		err := m.pusher.Push(ctx, img, t, j.Log.Printf)
		for _, o := range m.o.observers {
			if po, ok := o.(PushObserver); ok {
				po.Pushed(j, t.RegistryStr(), time.Since(start), err)
			}
		}
		if err != nil {
			return "", fmt.Errorf("pushing %s: %w", t, err)
		}
	}
	return digest.String(), nil
}

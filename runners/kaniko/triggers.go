package kaniko

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
)

// baseTriggers returns what the ONBUILD triggers of the base images do,
// all together: kaniko runs them as part of the stages built on them.
// req.Analysis must be set.
func baseTriggers(req *builder.Request) (*dockerfile.Onbuild, error) {
	all := &dockerfile.Onbuild{}
	b := req.BaseImages
	if b == nil || len(b.Images) == 0 {
		return all, nil
	}
	idx, err := layout.ImageIndexFromPath(b.Layout)
	if err != nil {
		return nil, fmt.Errorf("reading the base images: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base images: %w", err)
	}
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading base image %s: %w", d.Digest, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("reading base image %s: %w", d.Digest, err)
		}
		if len(cf.Config.OnBuild) == 0 {
			continue
		}
		ob, err := req.Analysis.Onbuild(d.Digest.String(), cf.Config.OnBuild)
		if err != nil {
			return nil, err
		}
		all.Images = append(all.Images, ob.Images...)
		all.Remote = append(all.Remote, ob.Remote...)
	}
	return all, nil
}

package kaniko

import (
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
)

// volumeLine returns the line of the first VOLUME instruction in a stage
// that kaniko builds for the analysis's target (every stage up to and
// including it), or 0 if there is none.
//
// kaniko's layer cache changes what such a Dockerfile builds: to compute
// cache keys it runs VOLUME ahead of the steps before it, creating the
// directory before an earlier RUN does (RUN mkdir /foo, then VOLUME
// /foo/bar, fails with "File exists"), and a trailing VOLUME's directory
// leaks into the image. Without the cache it builds what docker builds.
func volumeLine(a *dockerfile.Analysis) int {
	for _, s := range a.Stages[:a.Target+1] {
		if s.Volume > 0 {
			return s.Volume
		}
	}
	return 0
}

// layerCacheSafe reports whether kaniko's layer cache builds req as it
// would build without it, saying in the build log why not.
func layerCacheSafe(req *builder.Request, log io.Writer) bool {
	var line int
	var ob *dockerfile.Onbuild
	var err error
	if req.Analysis == nil {
		err = errors.New("the Dockerfile was not analyzed")
	} else if line = volumeLine(req.Analysis); line == 0 {
		ob, err = baseTriggers(req)
	}
	switch {
	case err != nil:
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: %v\n", err)
		return false
	case line > 0:
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: with it, kaniko would run the VOLUME on line %d before the steps above it\n", line)
		return false
	case ob.Volume != "":
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: with it, kaniko would run the base image's ONBUILD %s before the steps above it\n", ob.Volume)
		return false
	}
	return true
}

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
		if all.Volume == "" {
			all.Volume = ob.Volume
		}
		all.Images = append(all.Images, ob.Images...)
		all.Remote = append(all.Remote, ob.Remote...)
	}
	return all, nil
}

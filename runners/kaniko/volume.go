package kaniko

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
)

// volumeLine returns the line of the first VOLUME instruction in a stage
// that kaniko builds for target (every stage up to and including it; all
// if target is empty), or 0 if there is none.
//
// kaniko's layer cache changes what such a Dockerfile builds: to compute
// cache keys it runs VOLUME ahead of the steps before it, creating the
// directory before an earlier RUN does (RUN mkdir /foo, then VOLUME
// /foo/bar, fails with "File exists"), and a trailing VOLUME's directory
// leaks into the image. Without the cache it builds what docker builds.
func volumeLine(dockerfile []byte, target string) (int, error) {
	res, err := parser.Parse(bytes.NewReader(dockerfile))
	if err != nil {
		return 0, fmt.Errorf("parsing the Dockerfile: %w", err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return 0, fmt.Errorf("parsing the Dockerfile: %w", err)
	}
	for _, st := range stages {
		for _, c := range st.Commands {
			if v, ok := c.(*instructions.VolumeCommand); ok {
				if loc := v.Location(); len(loc) > 0 {
					return loc[0].Start.Line, nil
				}
				return 1, nil
			}
		}
		if target != "" && strings.EqualFold(st.Name, target) {
			break
		}
	}
	return 0, nil
}

// layerCacheSafe reports whether kaniko's layer cache builds req as it
// would build without it, saying in the build log why not.
func layerCacheSafe(req *builder.Request, log io.Writer) bool {
	df, err := dockerfile.Read(req.ContextDir, req.Dockerfile)
	line := 0
	if err == nil {
		line, err = volumeLine(df, req.Target)
	}
	trigger := ""
	if err == nil && line == 0 {
		trigger, err = onbuildVolume(req.BaseImages)
	}
	switch {
	case err != nil:
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: %v\n", err)
		return false
	case line > 0:
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: with it, kaniko would run the VOLUME on line %d before the steps above it\n", line)
		return false
	case trigger != "":
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: with it, kaniko would run the base image's ONBUILD %s before the steps above it\n", trigger)
		return false
	}
	return true
}

// onbuildVolume returns the first VOLUME among the ONBUILD triggers of
// the base images, which kaniko runs as part of the stages built on them,
// or "".
func onbuildVolume(b *builder.BaseImages) (string, error) {
	if b == nil || len(b.Images) == 0 {
		return "", nil
	}
	idx, err := layout.ImageIndexFromPath(b.Layout)
	if err != nil {
		return "", fmt.Errorf("reading the base images: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "", fmt.Errorf("reading the base images: %w", err)
	}
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return "", fmt.Errorf("reading base image %s: %w", d.Digest, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return "", fmt.Errorf("reading base image %s: %w", d.Digest, err)
		}
		for _, trig := range cf.Config.OnBuild {
			res, err := parser.Parse(strings.NewReader(trig))
			if err != nil {
				// kaniko will refuse it too.
				continue
			}
			for _, n := range res.AST.Children {
				if strings.EqualFold(n.Value, "volume") {
					return trig, nil
				}
			}
		}
	}
	return "", nil
}

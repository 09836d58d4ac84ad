package kaniko

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/buildgw/buildgw/builder"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
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
	df, err := builder.ReadDockerfile(req.ContextDir, req.Dockerfile)
	line := 0
	if err == nil {
		line, err = volumeLine(df, req.Target)
	}
	switch {
	case err != nil:
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: %v\n", err)
		return false
	case line > 0:
		fmt.Fprintf(log, "buildgw: kaniko's layer cache is off for this build: with it, kaniko would run the VOLUME on line %d before the steps above it\n", line)
		return false
	}
	return true
}

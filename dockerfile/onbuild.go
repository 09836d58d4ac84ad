package dockerfile

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Onbuild is what the ONBUILD triggers of a base image do when a stage of
// the analyzed Dockerfile is built on it.
type Onbuild struct {
	// Images are the images the triggers read: COPY --from and RUN --mount
	// from= naming neither a stage of the Dockerfile nor scratch, and the
	// image of any FROM smuggled in by a line break.
	Images []Image
	// Remote are the sources of the triggers' ADDs that come from the
	// network.
	Remote []Remote
}

// Onbuild parses triggers, the ONBUILD triggers in the config of base (an
// image a stage is built on), as the runners do: each alone, a stage of
// the Dockerfile named by them being that stage. A trigger that does not
// parse is an error, never skipped.
func (a *Analysis) Onbuild(base string, triggers []string) (*Onbuild, error) {
	names := map[string]bool{}
	for _, s := range a.Stages {
		if s.Name != "" {
			names[s.Name] = true
		}
	}
	isStage := func(ref string) bool {
		if names[strings.ToLower(ref)] {
			return true
		}
		n, err := strconv.Atoi(ref)
		return err == nil && n >= 0 && n < len(a.Stages)
	}
	ob := &Onbuild{}
	for i, trig := range triggers {
		where := fmt.Sprintf("ONBUILD trigger %d of base image %s", i+1, base)
		res, err := parser.Parse(strings.NewReader("FROM scratch\n" + trig + "\n"))
		if err != nil {
			return nil, fmt.Errorf("%s: cannot parse %q: %w", where, short(trig), err)
		}
		stages, _, err := instructions.Parse(res.AST, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: cannot parse %q: %w", where, short(trig), err)
		}
		var froms []string
		for j, st := range stages {
			// A trigger holding a line break could smuggle in a FROM;
			// its image is checked like any other.
			if j > 0 && st.BaseName != "scratch" {
				froms = append(froms, st.BaseName)
			}
			for _, c := range st.Commands {
				switch c := c.(type) {
				case *instructions.CopyCommand:
					froms = append(froms, c.From)
				case *instructions.RunCommand:
					for _, m := range instructions.GetMounts(c) {
						froms = append(froms, m.From)
					}
				case *instructions.AddCommand:
					for _, src := range c.SourcePaths {
						if isRemote(src) {
							ob.Remote = append(ob.Remote, Remote{Source: src, Stage: -1})
						}
					}
				}
			}
		}
		for _, f := range froms {
			if f == "" || isStage(f) {
				continue
			}
			ref, err := name.ParseReference(f)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a valid image reference", where, short(f))
			}
			ob.Images = append(ob.Images, Image{Ref: ref, Where: where})
		}
	}
	return ob, nil
}

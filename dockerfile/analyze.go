package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Analysis is what the gateway needs to know of a Dockerfile before it is
// built: made once when the build is accepted, then read by the policy,
// the base store and the runners, so that all of them see the same
// Dockerfile resolved the same way.
type Analysis struct {
	// Images are the images the build pulls from registries, in the
	// order they appear: BuildKit's frontend (BUILDKIT_SYNTAX build arg,
	// then # syntax= directive), then per stage its FROM, COPY --from and
	// RUN --mount from= images. Stages and scratch are not images.
	Images []Image
	// Stages are the Dockerfile's stages, in order.
	Stages []Stage
	// Target is the index in Stages of the stage the build produces.
	Target int
	// Remote are the sources ADD fetches when its step runs.
	Remote []Remote
}

// Image is an image reference that a build pulls, and where it comes from.
type Image struct {
	Ref name.Reference
	// Where says which instruction names it, e.g. "FROM on line 3".
	Where string
	// Frontend is set for BuildKit's frontend image, which runs the build
	// rather than being part of it.
	Frontend bool
}

// Stage is one FROM and its instructions.
type Stage struct {
	// Name is the stage's name, lowercase as the parser gives it; "" if it
	// has none.
	Name string
	// Line is the line of its FROM.
	Line int
	// Base is the image the stage is built on, after ARG substitution;
	// nil for scratch or an earlier stage.
	Base name.Reference
	// Parent is the index of the earlier stage it is built on, or -1.
	Parent int
	// Needed is set for the target and every stage it reads from, through
	// FROM, COPY --from or RUN --mount from=.
	Needed bool
}

// Remote is a source that ADD fetches from the network (a URL or a git
// repository) rather than from the context, or one that holds a variable
// and may expand to such a source.
type Remote struct {
	Source string
	Line   int
	// Stage is the index of the stage the ADD is in.
	Stage int
}

// buildkitSyntaxArg is the build arg with which BuildKit takes its
// Dockerfile frontend from an image, overriding a # syntax= directive.
const buildkitSyntaxArg = "BUILDKIT_SYNTAX"

// maxExpansion bounds the bytes that ARG substitution may produce while a
// Dockerfile is analyzed: ARG B=$A$A, ARG C=$B$B... doubles at each line,
// and would otherwise take the gateway's memory for a few hundred bytes of
// Dockerfile.
const maxExpansion = MaxBytes

// Analyze parses src, a Dockerfile, and resolves what its build pulls with
// args as build args, for the stage target (the last stage if empty).
//
// ARGs before the first FROM take their defaults, overridden by args, and
// FROM is expanded with them as BuildKit and kaniko do. Where the two
// would resolve a reference differently (a build arg for an ARG not
// declared before its use, an empty build arg or one holding "=", a
// platform ARG that BuildKit predefines and the runner does not, see
// WithPredefinedArgs), or where a variable in a
// reference has no value, Analyze returns an error rather than a guess. A
// declared ARG with an empty value (ARG VARIANT="") is a value every
// runner agrees on. COPY --from and RUN --mount from= are not expanded by
// either runner, so they are taken as written; one naming neither an
// earlier stage nor scratch is an image. Short Docker Hub names (FROM
// busybox) resolve to index.docker.io, as name.ParseReference does.
//
// Errors name the line they are about.
func Analyze(src []byte, args map[string]string, target string, opts ...Option) (*Analysis, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, parseError(err)
	}
	// The nil linter: only the instructions are needed, not warnings.
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, parseError(err)
	}
	if len(stages) == 0 {
		return nil, errors.New("cannot parse Dockerfile: it has no FROM instruction")
	}
	lex := shell.NewLex(res.EscapeToken)
	var predefined map[string]string
	if o.platform != nil {
		predefined = predefinedArgs(*o.platform, o.only, target, stages)
	}
	env, err := resolveMetaArgs(lex, metaArgs, args, predefined)
	if err != nil {
		return nil, err
	}

	a := &Analysis{}
	add := func(raw, resolved, where string) error {
		ref, err := name.ParseReference(resolved)
		if err != nil {
			if raw != resolved {
				return fmt.Errorf("%s: %q (from %q) is not a valid image reference", where, short(resolved), short(raw))
			}
			return fmt.Errorf("%s: %q is not a valid image reference", where, short(resolved))
		}
		a.Images = append(a.Images, Image{Ref: ref, Where: where})
		return nil
	}

	// The frontend image BuildKit would run, if any. The build arg wins
	// over the directive in BuildKit, but both are kept: a runner that
	// ignores the build arg would use the directive.
	if v := args[buildkitSyntaxArg]; v != "" {
		ref, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		if err := add(v, ref, "build arg "+buildkitSyntaxArg); err != nil {
			return nil, err
		}
		a.Images[len(a.Images)-1].Frontend = true
	}
	if ref, _, loc, ok := parser.DetectSyntax(src); ok {
		if err := add(ref, ref, fmt.Sprintf("# syntax directive on line %d", lineOf(loc))); err != nil {
			return nil, err
		}
		a.Images[len(a.Images)-1].Frontend = true
	}

	// Stage names so far, to their first index: a map keeps a Dockerfile
	// of many stages linear.
	names := map[string]int{}
	// stageRef returns the earlier stage that ref names, if any. COPY
	// --from=N names stage N; kaniko pulls an image called "N" if N is
	// not an earlier stage, so only earlier ones count.
	stageRef := func(ref string, current int) (int, bool) {
		if i, ok := names[strings.ToLower(ref)]; ok {
			return i, true
		}
		n, err := strconv.Atoi(ref)
		return n, err == nil && n >= 0 && n < current
	}
	deps := make([][]int, len(stages))
	for i, st := range stages {
		line := lineOf(st.Location)
		where := fmt.Sprintf("FROM on line %d", line)
		r, err := env.expand(lex, st.BaseName)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", where, short(st.BaseName), err)
		}
		if p := env.refProblem(args, r.Matched, r.Unmatched, true); p != "" {
			return nil, fmt.Errorf("%s: cannot resolve %q: %s", where, short(st.BaseName), p)
		}
		base := r.Result
		s := Stage{Name: st.Name, Line: line, Parent: -1}
		j, isStage := names[strings.ToLower(base)]
		switch {
		case base == "":
			return nil, fmt.Errorf("%s: the image is empty", where)
		case base == "scratch":
		case isStage:
			s.Parent = j
			deps[i] = append(deps[i], j)
		default:
			if err := add(st.BaseName, base, where); err != nil {
				return nil, err
			}
			s.Base = a.Images[len(a.Images)-1].Ref
		}

		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.CopyCommand:
				if c.From == "" {
					continue
				}
				if j, ok := stageRef(c.From, i); ok {
					deps[i] = append(deps[i], j)
					continue
				}
				if err := add(c.From, c.From, fmt.Sprintf("COPY --from on line %d", lineOf(c.Location()))); err != nil {
					return nil, err
				}
			case *instructions.RunCommand:
				for _, m := range instructions.GetMounts(c) {
					if m.From == "" {
						continue
					}
					if j, ok := stageRef(m.From, i); ok {
						deps[i] = append(deps[i], j)
						continue
					}
					if err := add(m.From, m.From, fmt.Sprintf("RUN --mount from= on line %d", lineOf(c.Location()))); err != nil {
						return nil, err
					}
				}
			case *instructions.AddCommand:
				for _, src := range c.SourcePaths {
					if isRemote(src) {
						a.Remote = append(a.Remote, Remote{Source: src, Line: lineOf(c.Location()), Stage: i})
					}
				}
			}
		}
		if st.Name != "" {
			if _, ok := names[st.Name]; !ok {
				names[st.Name] = i
			}
		}
		a.Stages = append(a.Stages, s)
	}

	a.Target = len(stages) - 1
	if target != "" {
		i, ok := names[strings.ToLower(target)]
		if !ok {
			return nil, fmt.Errorf("target stage %q not found", target)
		}
		a.Target = i
	}
	// Every stage reads only earlier ones, so one pass from the target
	// down marks what it needs.
	a.Stages[a.Target].Needed = true
	for i := a.Target; i >= 0; i-- {
		if a.Stages[i].Needed {
			for _, j := range deps[i] {
				a.Stages[j].Needed = true
			}
		}
	}
	return a, nil
}

// isRemote reports whether an ADD source is fetched from the network:
// anything with a scheme (kaniko fetches every URL with a scheme and a
// host; BuildKit also clones git URLs), git's scp-like form, or a source
// with a variable, which may expand to either.
func isRemote(src string) bool {
	return strings.Contains(src, "://") || strings.HasPrefix(src, "git@") || strings.Contains(src, "$")
}

// BuildImages returns the images of the build itself, without BuildKit's
// frontend: those the gateway fetches for it.
func (a *Analysis) BuildImages() []name.Reference {
	var refs []name.Reference
	for _, img := range a.Images {
		if !img.Frontend {
			refs = append(refs, img.Ref)
		}
	}
	return refs
}

// StageImages returns the images that stages are built on directly (FROM,
// after ARG substitution; not scratch or earlier stages): the images whose
// ONBUILD triggers run in the build.
func (a *Analysis) StageImages() []name.Reference {
	var refs []name.Reference
	for _, s := range a.Stages {
		if s.Base != nil {
			refs = append(refs, s.Base)
		}
	}
	return refs
}

// FinalBase returns the image the target stage is built on, following
// FROM through earlier stages; nil if that is scratch. The built image
// records it (org.opencontainers.image.base.name).
func (a *Analysis) FinalBase() name.Reference {
	i := a.Target
	for a.Stages[i].Parent >= 0 {
		i = a.Stages[i].Parent
	}
	return a.Stages[i].Base
}

// parseError words an error of BuildKit's parser, with the line it is
// about when the parser's message lacks it.
func parseError(err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && !strings.Contains(err.Error(), "line") && len(le.Locations) > 0 {
		if l := lineOf(le.Locations[0]); l > 0 {
			return fmt.Errorf("cannot parse Dockerfile: line %d: %w", l, err)
		}
	}
	return fmt.Errorf("cannot parse Dockerfile: %w", err)
}

// short cuts a word of the Dockerfile quoted in an error: a line may be
// 64 KiB long, and the error goes back to the caller.
func short(s string) string {
	const n = 256
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func lineOf(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

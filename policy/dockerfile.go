package policy

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// platformArgs are the ARGs BuildKit defines by itself, from the build's
// platform, and kaniko does not. A Dockerfile whose images depend on one
// would be resolved differently by the two runners, so that is refused
// unless the Dockerfile or a build arg gives the value.
func platformArgs() []string {
	return []string{
		"BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
		"TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT", "TARGETSTAGE",
	}
}

const platformProblem = "is predefined by BuildKit but not by kaniko; give it a value with a build arg"

// buildArgValue is the value of an ARG set by a build arg. kaniko, unlike
// BuildKit, ignores an empty build arg (keeping the default) and cuts a
// value at its first "=" when it resolves FROM, so such values are marked.
func buildArgValue(v string) argValue {
	av := argValue{value: v, set: true}
	switch {
	case v == "":
		av.problem = "is set to an empty build arg"
	case strings.Contains(v, "="):
		av.problem = "is set to a build arg holding \"=\", which kaniko cuts off"
	}
	return av
}

// buildkitSyntaxArg is the build arg with which BuildKit takes its
// Dockerfile frontend from an image, overriding a # syntax= directive.
const buildkitSyntaxArg = "BUILDKIT_SYNTAX"

// image is an image reference that a build pulls, and where it comes from.
type image struct {
	ref      name.Reference
	where    string // e.g. "FROM on line 3"
	frontend bool   // BuildKit's frontend, not part of the build itself
}

// FromImages returns the references of the images a build of dockerfile
// pulls from registries: the base image of every stage, after ARG
// substitution, excluding "scratch" and references to earlier stages
// (matched case-insensitively, as kaniko does). Images named by COPY
// --from and RUN --mount from=, and the BuildKit frontend of a # syntax=
// directive or BUILDKIT_SYNTAX build arg, are included too: each is pulled
// from a registry by some runner, so each must pass allow.from.
//
// ARGs before the first FROM take their defaults, overridden by buildArgs.
// Where kaniko and BuildKit would resolve a reference differently (a build
// arg for an ARG not declared before its use, an empty build arg or one
// holding "=", a platform ARG that only BuildKit predefines), or where a
// variable in a reference has no value, FromImages returns an error
// rather than a guess.
//
// Short Docker Hub names (FROM busybox) resolve to index.docker.io, as
// name.ParseReference does.
func FromImages(dockerfile []byte, buildArgs map[string]string) ([]name.Reference, error) {
	imgs, _, err := baseImages(dockerfile, buildArgs)
	if err != nil {
		return nil, err
	}
	refs := make([]name.Reference, len(imgs))
	for i, img := range imgs {
		refs[i] = img.ref
	}
	return refs, nil
}

// BuildImages is FromImages without BuildKit's frontend image: the images
// the build itself is made of, which the gateway fetches for it.
func BuildImages(dockerfile []byte, buildArgs map[string]string) ([]name.Reference, error) {
	imgs, _, err := baseImages(dockerfile, buildArgs)
	if err != nil {
		return nil, err
	}
	var refs []name.Reference
	for _, img := range imgs {
		if !img.frontend {
			refs = append(refs, img.ref)
		}
	}
	return refs, nil
}

// argValue is a meta ARG as resolved before the first FROM.
type argValue struct {
	value string
	set   bool
	// problem, if not empty, says why the runners may disagree on the
	// value; using it in a reference is an error.
	problem string
}

// argEnv is the ARG scope before the first FROM, as shell.Lex reads it.
// Declared ARGs without a value are not set, as in BuildKit.
type argEnv map[string]argValue

func (e argEnv) Get(k string) (string, bool) {
	v, ok := e[k]
	return v.value, ok && v.set
}

func (e argEnv) Keys() []string {
	var keys []string
	for k, v := range e {
		if v.set {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// refProblem returns why a word that looked up matched and unmatched
// variables cannot be resolved with confidence, or "". strict is for
// references themselves, where an unset variable is refused too.
func (e argEnv) refProblem(buildArgs map[string]string, matched, unmatched map[string]struct{}, strict bool) string {
	for _, k := range sortedKeys(unmatched) {
		v, declared := e[k]
		switch {
		case declared && v.problem != "":
			return fmt.Sprintf("ARG %s %s", k, v.problem)
		case !declared && hasKey(buildArgs, k):
			// kaniko would use the build arg, BuildKit would not.
			return fmt.Sprintf("build arg %s is not declared by an ARG before it is used", k)
		case strict:
			return fmt.Sprintf("ARG %s has no value", k)
		}
	}
	// A declared ARG with an empty value (ARG VARIANT="") is a value all
	// runners agree on: FROM busybox${VARIANT} is built by docker, BuildKit
	// and kaniko alike. A reference that ends up empty is refused later.
	for _, k := range sortedKeys(matched) {
		if v := e[k]; v.problem != "" {
			return fmt.Sprintf("ARG %s %s", k, v.problem)
		}
	}
	return ""
}

// FinalBase returns the image that the stage target (the last stage if
// target is empty) is built on, following FROM through earlier stages, as
// FromImages resolves it; nil if that is scratch. The built image records
// it (org.opencontainers.image.base.name).
func FinalBase(dockerfile []byte, buildArgs map[string]string, target string) (name.Reference, error) {
	_, stages, err := baseImages(dockerfile, buildArgs)
	if err != nil {
		return nil, err
	}
	i := len(stages) - 1
	if target != "" {
		i = slices.IndexFunc(stages, func(s stageBase) bool { return strings.EqualFold(s.name, target) })
		if i < 0 {
			return nil, fmt.Errorf("target stage %q not found", target)
		}
	}
	for stages[i].parent >= 0 {
		i = stages[i].parent
	}
	return stages[i].ref, nil
}

// stageBase is what one stage is built on: an image (nil for scratch) or
// an earlier stage.
type stageBase struct {
	name   string
	ref    name.Reference
	parent int // index of the earlier stage, or -1
}

// baseImages is FromImages with where each image comes from, and what
// each stage is built on.
func baseImages(dockerfile []byte, buildArgs map[string]string) ([]image, []stageBase, error) {
	res, err := parser.Parse(bytes.NewReader(dockerfile))
	if err != nil {
		return nil, nil, fmt.Errorf("cannot parse Dockerfile: %w", err)
	}
	// The nil linter: policy only needs the instructions, not warnings.
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot parse Dockerfile: %w", err)
	}
	if len(stages) == 0 {
		return nil, nil, fmt.Errorf("cannot parse Dockerfile: it has no FROM instruction")
	}
	lex := shell.NewLex(res.EscapeToken)

	// Resolve the ARGs before the first FROM as BuildKit does: in order,
	// a build arg replacing the default, a default expanded with the ARGs
	// declared before it.
	env := argEnv{}
	for _, k := range platformArgs() {
		// Both runners see a build arg for a platform ARG, declared or not.
		if v, ok := buildArgs[k]; ok {
			env[k] = buildArgValue(v)
		} else {
			env[k] = argValue{problem: platformProblem}
		}
	}
	for _, cmd := range metaArgs {
		line := lineOf(cmd.Location())
		for _, kv := range cmd.Args {
			k := kv.Key
			if v, ok := buildArgs[k]; ok {
				env[k] = buildArgValue(v)
				continue
			}
			if kv.Value == nil {
				// Declaring again keeps an earlier value, as in BuildKit.
				if _, ok := env[k]; !ok {
					env[k] = argValue{}
				}
				continue
			}
			r, err := lex.ProcessWordWithMatches(*kv.Value, env)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: ARG %s: %w", line, k, err)
			}
			env[k] = argValue{
				value:   r.Result,
				set:     true,
				problem: env.refProblem(buildArgs, r.Matched, r.Unmatched, false),
			}
		}
	}

	var imgs []image
	add := func(raw, resolved, where string) error {
		ref, err := name.ParseReference(resolved)
		if err != nil {
			if raw != resolved {
				return fmt.Errorf("%s: %q (from %q) is not a valid image reference: %w", where, resolved, raw, err)
			}
			return fmt.Errorf("%s: %q is not a valid image reference: %w", where, resolved, err)
		}
		imgs = append(imgs, image{ref: ref, where: where})
		return nil
	}

	// The frontend image BuildKit would run, if any. The build arg wins
	// over the directive in BuildKit, but both are checked: a runner that
	// ignores the build arg would use the directive.
	if v := buildArgs[buildkitSyntaxArg]; v != "" {
		ref, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		if err := add(v, ref, "build arg "+buildkitSyntaxArg); err != nil {
			return nil, nil, err
		}
		imgs[len(imgs)-1].frontend = true
	}
	if ref, _, loc, ok := parser.DetectSyntax(dockerfile); ok {
		if err := add(ref, ref, fmt.Sprintf("# syntax directive on line %d", lineOf(loc))); err != nil {
			return nil, nil, err
		}
		imgs[len(imgs)-1].frontend = true
	}

	var bases []stageBase
	var names []string // stage names so far, lowercase as the parser makes them
	isStage := func(ref string, current int) bool {
		if containsFold(names, ref) {
			return true
		}
		// COPY --from=N names stage N; kaniko pulls an image called "N"
		// if N is not an earlier stage, so only earlier ones count.
		n, err := strconv.Atoi(ref)
		return err == nil && n >= 0 && n < current
	}
	for i, st := range stages {
		line := lineOf(st.Location)
		where := fmt.Sprintf("FROM on line %d", line)
		r, err := lex.ProcessWordWithMatches(st.BaseName, env)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %q: %w", where, st.BaseName, err)
		}
		if p := env.refProblem(buildArgs, r.Matched, r.Unmatched, true); p != "" {
			return nil, nil, fmt.Errorf("%s: cannot resolve %q: %s", where, st.BaseName, p)
		}
		base := r.Result
		sb := stageBase{name: st.Name, parent: -1}
		switch {
		case base == "":
			return nil, nil, fmt.Errorf("%s: the image is empty", where)
		case base == "scratch":
		case containsFold(names, base):
			sb.parent = slices.IndexFunc(bases, func(s stageBase) bool { return s.name != "" && strings.EqualFold(s.name, base) })
		default:
			if err := add(st.BaseName, base, where); err != nil {
				return nil, nil, err
			}
			sb.ref = imgs[len(imgs)-1].ref
		}
		bases = append(bases, sb)

		// COPY --from and RUN --mount from= are not expanded by either
		// runner, so they are taken as written.
		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.CopyCommand:
				if c.From == "" || isStage(c.From, i) {
					continue
				}
				if err := add(c.From, c.From, fmt.Sprintf("COPY --from on line %d", lineOf(c.Location()))); err != nil {
					return nil, nil, err
				}
			case *instructions.RunCommand:
				for _, m := range instructions.GetMounts(c) {
					if m.From == "" || isStage(m.From, i) {
						continue
					}
					if err := add(m.From, m.From, fmt.Sprintf("RUN --mount from= on line %d", lineOf(c.Location()))); err != nil {
						return nil, nil, err
					}
				}
			}
		}
		if st.Name != "" {
			names = append(names, st.Name)
		}
	}
	return imgs, bases, nil
}

func containsFold(names []string, s string) bool {
	for _, n := range names {
		if strings.EqualFold(n, s) {
			return true
		}
	}
	return false
}

func lineOf(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// StageImages returns the images that stages of dockerfile are built on
// directly (FROM, after ARG substitution; not scratch or earlier stages):
// the images whose ONBUILD triggers run in the build.
func StageImages(dockerfile []byte, buildArgs map[string]string) ([]name.Reference, error) {
	_, stages, err := baseImages(dockerfile, buildArgs)
	if err != nil {
		return nil, err
	}
	var refs []name.Reference
	for _, s := range stages {
		if s.ref != nil {
			refs = append(refs, s.ref)
		}
	}
	return refs, nil
}

// onbuildImages returns the images that ONBUILD triggers of a base image
// pull when a stage is built on it: COPY --from and RUN --mount from=
// naming neither a stage (stageNames, or an index below nstages) nor
// scratch. Each trigger is parsed alone, as the runners do; one that does
// not parse is an error, never skipped.
func onbuildImages(base string, triggers []string, stageNames []string, nstages int) ([]image, error) {
	isStage := func(ref string) bool {
		if containsFold(stageNames, ref) {
			return true
		}
		n, err := strconv.Atoi(ref)
		return err == nil && n >= 0 && n < nstages
	}
	var imgs []image
	for i, trig := range triggers {
		where := fmt.Sprintf("ONBUILD trigger %d of base image %s", i+1, base)
		res, err := parser.Parse(strings.NewReader("FROM scratch\n" + trig + "\n"))
		if err != nil {
			return nil, fmt.Errorf("%s: cannot parse %q: %w", where, trig, err)
		}
		stages, _, err := instructions.Parse(res.AST, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: cannot parse %q: %w", where, trig, err)
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
				}
			}
		}
		for _, f := range froms {
			if f == "" || isStage(f) {
				continue
			}
			ref, err := name.ParseReference(f)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a valid image reference: %w", where, f, err)
			}
			imgs = append(imgs, image{ref: ref, where: where})
		}
	}
	return imgs, nil
}

package dockerfile

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// PlatformArgs returns the ARGs BuildKit defines by itself in the global
// scope, from the build's platform and target. A runner whose builder
// does not (Docker 20.10's legacy builder) would resolve a Dockerfile
// whose images depend on one differently, so that is refused unless the
// Dockerfile or a build arg gives the value, or the runner predefines it
// too (WithPredefinedArgs).
func PlatformArgs() []string {
	return []string{
		"BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
		"TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT", "TARGETSTAGE",
	}
}

const platformProblem = "is predefined by BuildKit but not by this runner; give it a value with a build arg"

// Option configures Analyze.
type Option func(*options)

type options struct {
	platform *v1.Platform
	// only, if not nil, are the PlatformArgs the runner predefines.
	only []string
}

// WithPredefinedArgs says that the runner predefines BuildKit's global
// ARGs (PlatformArgs) as BuildKit does, building on and for platform p,
// with TARGETSTAGE the target, or the last stage's name, or "default":
// the kaniko runner's executor does (third_party/kaniko patch 0013).
// names, if given, are the only ones of them the runner predefines (those
// of PlatformArgs its builder knows: Docker 20.10's BuildKit lacks
// TARGETSTAGE); a FROM that uses another without a value is refused.
// Default: the runner predefines none, and a FROM that uses one without
// a value is refused.
func WithPredefinedArgs(p v1.Platform, names ...string) Option {
	return func(o *options) {
		o.platform = &p
		o.only = nil
		if len(names) > 0 {
			o.only = slices.Clone(names)
		}
	}
}

// predefinedArgs returns the values of PlatformArgs for a build on and for
// p, of target (or the last stage) of stages.
// Of those, only the names in only, if it is not nil.
func predefinedArgs(p v1.Platform, only []string, target string, stages []instructions.Stage) map[string]string {
	stage := target
	if stage == "" {
		stage = stages[len(stages)-1].Name
	}
	if stage == "" {
		stage = "default"
	}
	format := path.Join(p.OS, p.Architecture, p.Variant)
	args := map[string]string{
		"BUILDPLATFORM": format, "BUILDOS": p.OS, "BUILDOSVERSION": p.OSVersion,
		"BUILDARCH": p.Architecture, "BUILDVARIANT": p.Variant,
		"TARGETPLATFORM": format, "TARGETOS": p.OS, "TARGETOSVERSION": p.OSVersion,
		"TARGETARCH": p.Architecture, "TARGETVARIANT": p.Variant,
		"TARGETSTAGE": stage,
	}
	if only != nil {
		maps.DeleteFunc(args, func(k, _ string) bool { return !slices.Contains(only, k) })
	}
	return args
}

// argValue is a meta ARG as resolved before the first FROM.
type argValue struct {
	value string
	set   bool
	// problem, if not empty, says why the runners may disagree on the
	// value; using it in a reference is an error.
	problem string
}

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

// argEnv is the ARG scope before the first FROM, as shell.Lex reads it.
// Declared ARGs without a value are not set, as in BuildKit.
type argEnv struct {
	vals map[string]argValue
	// budget is how many more bytes of values Get may hand out; once it
	// is spent Get hands out nothing and sets over.
	budget int
	over   bool
}

func (e *argEnv) Get(k string) (string, bool) {
	v, ok := e.vals[k]
	if !ok || !v.set {
		return "", false
	}
	if len(v.value) > e.budget {
		e.over = true
		return "", true
	}
	e.budget -= len(v.value)
	return v.value, true
}

func (e *argEnv) Keys() []string {
	var keys []string
	for k, v := range e.vals {
		if v.set {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// expand substitutes the ARGs in word, within the budget.
func (e *argEnv) expand(lex *shell.Lex, word string) (shell.ProcessWordResult, error) {
	r, err := lex.ProcessWordWithMatches(word, e)
	if err == nil && e.over {
		err = fmt.Errorf("ARG substitution makes more than %d bytes", maxExpansion)
	}
	return r, err
}

// resolveMetaArgs resolves the ARGs before the first FROM as BuildKit
// does: in order, a build arg replacing the default, a default expanded
// with the ARGs declared before it.
func resolveMetaArgs(lex *shell.Lex, metaArgs []instructions.ArgCommand, buildArgs, predefined map[string]string) (*argEnv, error) {
	env := &argEnv{vals: map[string]argValue{}, budget: maxExpansion}
	for _, k := range PlatformArgs() {
		// Both runners see a build arg for a platform ARG, declared or not.
		if v, ok := buildArgs[k]; ok {
			env.vals[k] = buildArgValue(v)
		} else if v, ok := predefined[k]; ok {
			env.vals[k] = argValue{value: v, set: true}
		} else {
			env.vals[k] = argValue{problem: platformProblem}
		}
	}
	for _, cmd := range metaArgs {
		line := lineOf(cmd.Location())
		for _, kv := range cmd.Args {
			k := kv.Key
			if v, ok := buildArgs[k]; ok {
				env.vals[k] = buildArgValue(v)
				continue
			}
			if kv.Value == nil {
				// Declaring again keeps an earlier value, as in BuildKit.
				if _, ok := env.vals[k]; !ok {
					env.vals[k] = argValue{}
				}
				continue
			}
			r, err := env.expand(lex, *kv.Value)
			if err != nil {
				return nil, fmt.Errorf("line %d: ARG %s: %w", line, k, err)
			}
			env.vals[k] = argValue{
				value:   r.Result,
				set:     true,
				problem: env.refProblem(buildArgs, r.Matched, r.Unmatched, false),
			}
		}
	}
	return env, nil
}

// refProblem returns why a word that looked up matched and unmatched
// variables cannot be resolved with confidence, or "". strict is for
// references themselves, where an unset variable is refused too.
func (e *argEnv) refProblem(buildArgs map[string]string, matched, unmatched map[string]struct{}, strict bool) string {
	for _, k := range sortedKeys(unmatched) {
		v, declared := e.vals[k]
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
		if v := e.vals[k]; v.problem != "" {
			return fmt.Sprintf("ARG %s %s", k, v.problem)
		}
	}
	return ""
}

func sortedKeys(m map[string]struct{}) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

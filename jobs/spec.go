package jobs

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildgw/buildgw/api"
)

// Bounds on a spec; generous for real builds, small enough that a spec can
// never be used to exhaust the gateway's memory or a sandbox's argv.
const (
	maxDestinations = 32
	maxBuildArgs    = 128
	maxLabels       = 128
	maxKeyLen       = 256
	maxValueLen     = 16 << 10
)

var (
	argKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	targetRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// SpecError says why a BuildSpec was refused. The HTTP layer answers it
// with 400.
type SpecError struct {
	Field  string
	Reason string
}

func (e *SpecError) Error() string { return fmt.Sprintf("invalid spec: %s: %s", e.Field, e.Reason) }

var _ error = (*SpecError)(nil)

// ValidSpec is a BuildSpec that passed Validate: defaults filled in and
// every destination parsed.
type ValidSpec struct {
	api.BuildSpec
	Tags []name.Tag
}

// Validate checks s and fills in its defaults. runners lists the runner
// names this gateway offers; defaultRunner is used when s names none.
func Validate(s api.BuildSpec, runners []string, defaultRunner string) (*ValidSpec, error) {
	if s.Dockerfile == "" {
		s.Dockerfile = "Dockerfile"
	}
	if strings.ContainsRune(s.Dockerfile, 0) || len(s.Dockerfile) > 4096 {
		return nil, &SpecError{"dockerfile", "not a valid path"}
	}
	if path.IsAbs(s.Dockerfile) {
		return nil, &SpecError{"dockerfile", fmt.Sprintf("%q must be relative to the context", s.Dockerfile)}
	}
	if c := path.Clean(s.Dockerfile); c == ".." || strings.HasPrefix(c, "../") {
		return nil, &SpecError{"dockerfile", fmt.Sprintf("%q is outside the context", s.Dockerfile)}
	}

	if len(s.Destinations) == 0 {
		return nil, &SpecError{"destinations", "at least one image reference is required"}
	}
	if len(s.Destinations) > maxDestinations {
		return nil, &SpecError{"destinations", fmt.Sprintf("at most %d are allowed", maxDestinations)}
	}
	v := &ValidSpec{}
	seen := map[string]bool{}
	for _, d := range s.Destinations {
		// Strict: a destination names its registry and tag explicitly, so
		// nothing silently goes to Docker Hub or to :latest.
		tag, err := name.NewTag(d, name.StrictValidation)
		if err != nil && strings.Contains(d, "@") {
			return nil, &SpecError{"destinations", fmt.Sprintf("%q names a digest: destinations must be tags (registry/repo:tag), not digests", d)}
		}
		if err != nil {
			return nil, &SpecError{"destinations", fmt.Sprintf("%q is not a full image reference with registry and tag: %v", d, err)}
		}
		if !seen[tag.String()] {
			seen[tag.String()] = true
			v.Tags = append(v.Tags, tag)
		}
	}

	if len(s.BuildArgs) > maxBuildArgs {
		return nil, &SpecError{"build_args", fmt.Sprintf("at most %d are allowed", maxBuildArgs)}
	}
	for k, val := range s.BuildArgs {
		if !argKeyRE.MatchString(k) || len(k) > maxKeyLen {
			return nil, &SpecError{"build_args", fmt.Sprintf("%q is not a valid argument name", k)}
		}
		if len(val) > maxValueLen || strings.ContainsRune(val, 0) {
			return nil, &SpecError{"build_args", fmt.Sprintf("value of %q is too long or holds a NUL byte", k)}
		}
	}
	for _, k := range s.SecretBuildArgs {
		if _, ok := s.BuildArgs[k]; !ok {
			return nil, &SpecError{"secret_build_args", fmt.Sprintf("%q is not one of build_args", k)}
		}
	}
	if len(s.Labels) > maxLabels {
		return nil, &SpecError{"labels", fmt.Sprintf("at most %d are allowed", maxLabels)}
	}
	for k, val := range s.Labels {
		if k == "" || len(k) > maxKeyLen || strings.ContainsAny(k, "=\x00\n") {
			return nil, &SpecError{"labels", fmt.Sprintf("%q is not a valid label key", k)}
		}
		if len(val) > maxValueLen || strings.ContainsRune(val, 0) {
			return nil, &SpecError{"labels", fmt.Sprintf("value of %q is too long or holds a NUL byte", k)}
		}
	}
	if s.Target != "" && !targetRE.MatchString(s.Target) {
		return nil, &SpecError{"target", fmt.Sprintf("%q is not a valid stage name", s.Target)}
	}

	if s.Runner == "" {
		s.Runner = defaultRunner
	}
	found := false
	for _, r := range runners {
		found = found || r == s.Runner
	}
	if !found {
		sorted := append([]string(nil), runners...)
		sort.Strings(sorted)
		return nil, &SpecError{"runner", fmt.Sprintf("%q is not available here (available: %s)", s.Runner, strings.Join(sorted, ", "))}
	}
	v.BuildSpec = s
	return v, nil
}

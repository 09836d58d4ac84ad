package jobs

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api"
)

const testDest = "127.0.0.1:5000/team/app:v1"

func TestValidateDefaults(t *testing.T) {
	tests := []struct {
		name           string
		spec           api.BuildSpec
		wantDockerfile string
		wantRunner     string
		wantTags       []string
	}{
		{
			name:           "empty dockerfile and runner take the defaults",
			spec:           api.BuildSpec{Destinations: []string{testDest}},
			wantDockerfile: "Dockerfile",
			wantRunner:     "kaniko",
			wantTags:       []string{testDest},
		},
		{
			name:           "explicit values are kept",
			spec:           api.BuildSpec{Dockerfile: "docker/Dockerfile.prod", Runner: "dind", Destinations: []string{testDest}},
			wantDockerfile: "docker/Dockerfile.prod",
			wantRunner:     "dind",
			wantTags:       []string{testDest},
		},
		{
			name:           "duplicate destinations are pushed once",
			spec:           api.BuildSpec{Destinations: []string{testDest, testDest, "registry.example.com/a/b:c"}},
			wantDockerfile: "Dockerfile",
			wantRunner:     "kaniko",
			wantTags:       []string{testDest, "registry.example.com/a/b:c"},
		},
		{
			name: "dockerfile inside a subdirectory with dots stays inside",
			spec: api.BuildSpec{Dockerfile: "a/../b/Dockerfile", Destinations: []string{testDest},
				BuildArgs: map[string]string{"_X1": "v", "HTTP_PROXY": ""}, Labels: map[string]string{"org.opencontainers.image.source": "x"}, Target: "build-stage_1.2"},
			wantDockerfile: "a/../b/Dockerfile",
			wantRunner:     "kaniko",
			wantTags:       []string{testDest},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Validate(tc.spec, []string{"kaniko", "dind"}, "kaniko")
			if err != nil {
				t.Fatalf("Validate(%+v) = %v, want no error", tc.spec, err)
			}
			if v.Dockerfile != tc.wantDockerfile {
				t.Errorf("Validate(%+v).Dockerfile = %q, want %q", tc.spec, v.Dockerfile, tc.wantDockerfile)
			}
			if v.Runner != tc.wantRunner {
				t.Errorf("Validate(%+v).Runner = %q, want %q", tc.spec, v.Runner, tc.wantRunner)
			}
			var tags []string
			for _, tg := range v.Tags {
				tags = append(tags, tg.String())
			}
			if !reflect.DeepEqual(tags, tc.wantTags) {
				t.Errorf("Validate(%+v).Tags = %q, want %q", tc.spec, tags, tc.wantTags)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	many := func(n int, f func(i int) string) []string {
		var out []string
		for i := range n {
			out = append(out, f(i))
		}
		return out
	}
	manyMap := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("K%d", i)] = "v"
		}
		return m
	}
	base := func(f func(s *api.BuildSpec)) api.BuildSpec {
		s := api.BuildSpec{Destinations: []string{testDest}}
		f(&s)
		return s
	}
	tests := []struct {
		name      string
		spec      api.BuildSpec
		wantField string
		wantIn    string // substring of the message
	}{
		{"absolute dockerfile", base(func(s *api.BuildSpec) { s.Dockerfile = "/etc/passwd" }), "dockerfile", "relative"},
		{"escaping dockerfile", base(func(s *api.BuildSpec) { s.Dockerfile = "../Dockerfile" }), "dockerfile", "outside"},
		{"escaping dockerfile after clean", base(func(s *api.BuildSpec) { s.Dockerfile = "a/../../Dockerfile" }), "dockerfile", "outside"},
		{"parent dockerfile", base(func(s *api.BuildSpec) { s.Dockerfile = ".." }), "dockerfile", "outside"},
		{"dockerfile with NUL", base(func(s *api.BuildSpec) { s.Dockerfile = "Docker\x00file" }), "dockerfile", "not a valid path"},
		{"huge dockerfile path", base(func(s *api.BuildSpec) { s.Dockerfile = strings.Repeat("a", 4097) }), "dockerfile", "not a valid path"},
		{"no destinations", api.BuildSpec{}, "destinations", "at least one"},
		{"empty destinations", api.BuildSpec{Destinations: []string{}}, "destinations", "at least one"},
		{"destination without registry", base(func(s *api.BuildSpec) { s.Destinations = []string{"app:v1"} }), "destinations", "registry and tag"},
		{"destination without tag", base(func(s *api.BuildSpec) { s.Destinations = []string{"127.0.0.1:5000/app"} }), "destinations", "registry and tag"},
		{"destination by digest", base(func(s *api.BuildSpec) {
			s.Destinations = []string{"127.0.0.1:5000/app@sha256:" + strings.Repeat("a", 64)}
		}), "destinations", "destinations must be tags (registry/repo:tag), not digests"},
		{"destination garbage", base(func(s *api.BuildSpec) { s.Destinations = []string{"not a reference"} }), "destinations", "registry and tag"},
		{"one bad destination among good ones", base(func(s *api.BuildSpec) { s.Destinations = []string{testDest, "busybox"} }), "destinations", `"busybox"`},
		{"too many destinations", base(func(s *api.BuildSpec) {
			s.Destinations = many(33, func(i int) string { return fmt.Sprintf("127.0.0.1:5000/app:v%d", i) })
		}), "destinations", "at most 32"},
		{"build arg with dash", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"BAD-NAME": "x"} }), "build_args", `"BAD-NAME"`},
		{"build arg starting with digit", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"1X": "x"} }), "build_args", `"1X"`},
		{"build arg with equals", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"A=B": "x"} }), "build_args", "not a valid argument name"},
		{"empty build arg name", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"": "x"} }), "build_args", "not a valid argument name"},
		{"build arg value with NUL", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"A": "x\x00y"} }), "build_args", "NUL"},
		{"secret build arg that is not a build arg", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"A": "x"}; s.SecretBuildArgs = []string{"B"} }), "secret_build_args", `"B" is not one of build_args`},
		{"build arg value too long", base(func(s *api.BuildSpec) { s.BuildArgs = map[string]string{"A": strings.Repeat("v", 16<<10+1)} }), "build_args", "too long"},
		{"too many build args", base(func(s *api.BuildSpec) { s.BuildArgs = manyMap(129) }), "build_args", "at most 128"},
		{"empty label key", base(func(s *api.BuildSpec) { s.Labels = map[string]string{"": "x"} }), "labels", "not a valid label key"},
		{"label key with equals", base(func(s *api.BuildSpec) { s.Labels = map[string]string{"a=b": "x"} }), "labels", `"a=b"`},
		{"label key with newline", base(func(s *api.BuildSpec) { s.Labels = map[string]string{"a\nb": "x"} }), "labels", "not a valid label key"},
		{"label key too long", base(func(s *api.BuildSpec) { s.Labels = map[string]string{strings.Repeat("k", 257): "x"} }), "labels", "not a valid label key"},
		{"label value with NUL", base(func(s *api.BuildSpec) { s.Labels = map[string]string{"k": "\x00"} }), "labels", "NUL"},
		{"too many labels", base(func(s *api.BuildSpec) { s.Labels = manyMap(129) }), "labels", "at most 128"},
		{"target with space", base(func(s *api.BuildSpec) { s.Target = "my stage" }), "target", "not a valid stage name"},
		{"target with leading dash", base(func(s *api.BuildSpec) { s.Target = "-x" }), "target", "not a valid stage name"},
		{"target too long", base(func(s *api.BuildSpec) { s.Target = strings.Repeat("t", 129) }), "target", "not a valid stage name"},
		{"unknown runner", base(func(s *api.BuildSpec) { s.Runner = "docker" }), "runner", "available: dind, kaniko"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Validate(tc.spec, []string{"kaniko", "dind"}, "kaniko")
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("Validate(%q) = %v, %v, want a *SpecError", tc.name, v, err)
			}
			if se.Field != tc.wantField {
				t.Errorf("Validate(%q) field = %q, want %q", tc.name, se.Field, tc.wantField)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("Validate(%q) = %q, want it to contain %q", tc.name, err, tc.wantIn)
			}
		})
	}
}

func TestValidateDefaultRunnerMissing(t *testing.T) {
	// A default runner the gateway does not offer is refused, not silently
	// accepted.
	_, err := Validate(api.BuildSpec{Destinations: []string{testDest}}, []string{"dind"}, "kaniko")
	var se *SpecError
	if !errors.As(err, &se) || se.Field != "runner" {
		t.Fatalf("Validate(default runner missing) = %v, want a runner *SpecError", err)
	}
}

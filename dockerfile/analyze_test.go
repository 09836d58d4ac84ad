package dockerfile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// names returns the analysis's images, as full references.
func names(a *Analysis) []string {
	var got []string
	for _, img := range a.Images {
		got = append(got, img.Ref.Name())
	}
	return got
}

func needed(a *Analysis) []int {
	var got []int
	for i, s := range a.Stages {
		if s.Needed {
			got = append(got, i)
		}
	}
	return got
}

func remotes(a *Analysis) []string {
	var got []string
	for _, r := range a.Remote {
		got = append(got, fmt.Sprintf("%d:%s", r.Line, r.Source))
	}
	return got
}

func finalBase(a *Analysis) string {
	if ref := a.FinalBase(); ref != nil {
		return ref.Name()
	}
	return ""
}

func TestAnalyzeFixtures(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		args       map[string]string
		target     string
		images     []string // every image pulled, in order
		final      string   // the target's base image, "" for scratch
		needed     []int    // stages the target needs
		remote     []string // line:source of the ADDs from the network
		err        string
	}{
		{name: "multi-stage, last stage", file: "multistage-target",
			images: []string{"registry.example.com/go:1", "registry.example.com/docs:1", "registry.example.com/runtime:1"},
			final:  "registry.example.com/runtime:1", needed: []int{0, 3}},
		{name: "multi-stage with target", file: "multistage-target", target: "TEST",
			images: []string{"registry.example.com/go:1", "registry.example.com/docs:1", "registry.example.com/runtime:1"},
			final:  "registry.example.com/go:1", needed: []int{0, 1, 2}},
		{name: "unknown target", file: "multistage-target", target: "nope", err: `target stage "nope" not found`},
		{name: "ARG in FROM, defaults and declared empty", file: "arg-from",
			images: []string{"registry.example.com/base:1", "registry.example.com/base:1"},
			final:  "registry.example.com/base:1", needed: []int{1}},
		{name: "ARG in FROM, build args override", file: "arg-from", args: map[string]string{"REGISTRY": "other.example.com", "TAG": "7", "VARIANT": "-slim"},
			images: []string{"other.example.com/base-slim:7", "other.example.com/base:7"},
			final:  "other.example.com/base:7", needed: []int{1}},
		{name: "ARG in FROM, build arg overrides a derived ARG", file: "arg-from", args: map[string]string{"IMAGE": "r.example.com/xx"},
			images: []string{"r.example.com/xx:1", "r.example.com/xx:1"}, final: "r.example.com/xx:1", needed: []int{1}},
		{name: "ARG in FROM, empty build arg over a declared-empty ARG", file: "arg-from", args: map[string]string{"VARIANT": ""},
			err: "FROM on line 5: cannot resolve \"${IMAGE}${VARIANT}:${TAG}\": ARG VARIANT is set to an empty build arg"},
		{name: "ARG without value", file: "arg-unset", err: "FROM on line 2: cannot resolve \"$BASE\": ARG BASE has no value"},
		{name: "ARG without value given by build arg", file: "arg-unset", args: map[string]string{"BASE": "r.example.com/bb:2"},
			images: []string{"r.example.com/bb:2"}, final: "r.example.com/bb:2", needed: []int{0}},
		{name: "COPY --from stage and image", file: "copy-from",
			images: []string{"registry.example.com/build:1", "registry.example.com/tools:2", "registry.example.com/certs:3"},
			final:  "", needed: []int{0, 1}},
		{name: "scratch", file: "scratch", final: "", needed: []int{0}},
		{name: "ONBUILD base", file: "onbuild",
			images: []string{"registry.example.com/onbuild-base:1"}, final: "registry.example.com/onbuild-base:1", needed: []int{0, 1}},
		{name: "ADD of URLs", file: "add-url",
			images: []string{"registry.example.com/base:1"}, final: "registry.example.com/base:1", needed: []int{0},
			remote: []string{"3:https://example.com/a.tgz", "5:git://example.com/r.git", "6:git@example.com:org/repo.git", "7:http://example.com/b", "9:$SRC"}},
		{name: "syntax directive", file: "syntax", images: []string{"registry.example.com/frontend:1"}, needed: []int{0}},
		{name: "parse error", file: "parse-error", err: "cannot parse Dockerfile: dockerfile parse error on line 3: COPY requires at least two arguments"},
		{name: "unknown instruction", file: "unknown-instruction", err: "line 3: unknown instruction: BOGUS"},
		{name: "FROM with two words", file: "from-args", err: "line 2: FROM requires either one or three arguments"},
		{name: "instruction before FROM", file: "run-before-from", err: "cannot parse Dockerfile: line 1: no build stage in current context"},
		{name: "no instruction", file: "no-from", err: "cannot parse Dockerfile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", tc.file+".Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			a, err := Analyze(src, tc.args, tc.target)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Analyze(%s, %v, %q) = %v, want error containing %q", tc.file, tc.args, tc.target, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Analyze(%s, %v, %q) = %v", tc.file, tc.args, tc.target, err)
			}
			if got := names(a); !slices.Equal(got, tc.images) {
				t.Errorf("Analyze(%s).Images = %q, want %q", tc.file, got, tc.images)
			}
			if got := finalBase(a); got != tc.final {
				t.Errorf("Analyze(%s, target %q).FinalBase() = %q, want %q", tc.file, tc.target, got, tc.final)
			}
			if got := needed(a); !slices.Equal(got, tc.needed) {
				t.Errorf("Analyze(%s, target %q): needed stages %v, want %v", tc.file, tc.target, got, tc.needed)
			}
			if got := remotes(a); !slices.Equal(got, tc.remote) {
				t.Errorf("Analyze(%s).Remote = %q, want %q", tc.file, got, tc.remote)
			}
		})
	}
}

// TestAnalyzeImages covers how references are resolved: the cases on
// which kaniko and BuildKit would disagree are refused.
func TestAnalyzeImages(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		buildArgs  map[string]string
		want       []string
		wantErr    string
	}{
		{name: "docker hub short name", dockerfile: "FROM busybox\n",
			want: []string{"index.docker.io/library/busybox:latest"}},
		{name: "digest", dockerfile: "FROM registry.example.com/base@sha256:" + strings.Repeat("a", 64) + "\n",
			want: []string{"registry.example.com/base@sha256:" + strings.Repeat("a", 64)}},
		{name: "port", dockerfile: "FROM localhost:5000/base:1\n", want: []string{"localhost:5000/base:1"}},
		{name: "scratch and stages", dockerfile: "FROM scratch AS a\nFROM a\nFROM registry.example.com/go:1 AS Builder\nFROM builder\nFROM BUILDER\n",
			want: []string{"registry.example.com/go:1"}},
		{name: "later stage name is an image", dockerfile: "FROM app\nFROM registry.example.com/go:1 AS app\n",
			want: []string{"index.docker.io/library/app:latest", "registry.example.com/go:1"}},
		{name: "platform", dockerfile: "FROM --platform=linux/arm64 registry.example.com/base:1\n",
			want: []string{"registry.example.com/base:1"}},
		{name: "arg default", dockerfile: "ARG V=1\nARG IMG=registry.example.com/base\nFROM ${IMG}:${V}\n",
			want: []string{"registry.example.com/base:1"}},
		{name: "build arg overrides", dockerfile: "ARG V=1\nFROM registry.example.com/base:$V\n", buildArgs: map[string]string{"V": "2"},
			want: []string{"registry.example.com/base:2"}},
		{name: "quoted default", dockerfile: "ARG IMG=\"registry.example.com/base\"\nFROM $IMG\n",
			want: []string{"registry.example.com/base:latest"}},
		{name: "redeclared keeps value", dockerfile: "ARG IMG=registry.example.com/aa\nARG IMG\nFROM $IMG\n",
			want: []string{"registry.example.com/aa:latest"}},
		{name: "stage ARG does not count for FROM", dockerfile: "FROM scratch\nARG IMG=registry.example.com/aa\nFROM $IMG\n",
			wantErr: "ARG IMG has no value"},
		{name: "copy and mount", dockerfile: "FROM registry.example.com/aa AS a\nFROM scratch\nCOPY --from=registry.example.com/bb /x /x\nCOPY --from=a /y /y\nRUN --mount=type=cache,from=registry.example.com/cc,target=/c true\n",
			want: []string{"registry.example.com/aa:latest", "registry.example.com/bb:latest", "registry.example.com/cc:latest"}},
		{name: "COPY --from later stage index", dockerfile: "FROM scratch\nCOPY --from=10 /x /x\nFROM scratch\n",
			want: []string{"index.docker.io/library/10:latest"}},
		{name: "syntax", dockerfile: "# syntax=registry.example.com/frontend:1\nFROM scratch\n",
			want: []string{"registry.example.com/frontend:1"}},
		{name: "BUILDKIT_SYNTAX build arg", dockerfile: "FROM scratch\n", buildArgs: map[string]string{"BUILDKIT_SYNTAX": "evil.example.com/frontend"},
			want: []string{"evil.example.com/frontend:latest"}},
		{name: "escape directive", dockerfile: "# escape=`\nARG IMG=registry.example.com/aa\nFROM $IMG\nRUN echo `\n  hi\n",
			want: []string{"registry.example.com/aa:latest"}},
		{name: "parse error", dockerfile: "FROM\n", wantErr: "cannot parse Dockerfile"},
		{name: "bad ARG", dockerfile: "ARG =x\nFROM scratch\n", wantErr: "cannot parse Dockerfile"},
		{name: "empty", dockerfile: "", wantErr: "cannot parse Dockerfile"},
		{name: "only comments", dockerfile: "# nothing\n", wantErr: "cannot parse Dockerfile"},
		{name: "unset", dockerfile: "FROM $NOPE\n", wantErr: "ARG NOPE has no value"},
		{name: "declared empty", dockerfile: "ARG VARIANT=\"\"\nFROM registry.example.com/busybox${VARIANT}:1.31\n",
			want: []string{"registry.example.com/busybox:1.31"}},
		{name: "declared empty without quotes", dockerfile: "ARG VARIANT=\nFROM registry.example.com/aa${VARIANT}\n",
			want: []string{"registry.example.com/aa:latest"}},
		{name: "declared empty through another ARG", dockerfile: "ARG A=\nARG VARIANT=${A}\nFROM registry.example.com/aa${VARIANT}:1\n",
			want: []string{"registry.example.com/aa:1"}},
		{name: "declared empty image", dockerfile: "ARG IMG=\"\"\nFROM ${IMG}\n", wantErr: "the image is empty"},
		{name: "declared without value", dockerfile: "ARG VARIANT\nFROM registry.example.com/aa${VARIANT}\n", wantErr: "ARG VARIANT has no value"},
		{name: "declared empty and empty build arg", dockerfile: "ARG VARIANT=\"\"\nFROM registry.example.com/aa${VARIANT}\n", buildArgs: map[string]string{"VARIANT": ""},
			wantErr: "ARG VARIANT is set to an empty build arg"},
		{name: "undeclared build arg in FROM", dockerfile: "FROM $IMG\n", buildArgs: map[string]string{"IMG": "registry.example.com/aa"},
			wantErr: "build arg IMG is not declared"},
		{name: "build arg declared later", dockerfile: "ARG IMG=${R:-registry.example.com}/a\nARG R\nFROM $IMG\n", buildArgs: map[string]string{"R": "evil.example.com"},
			wantErr: "build arg R is not declared"},
		{name: "empty platform build arg", dockerfile: "FROM registry.example.com/aa:${TARGETARCH:-amd64}\n", buildArgs: map[string]string{"TARGETARCH": ""},
			wantErr: "ARG TARGETARCH is set to an empty build arg"},
		{name: "build arg with =", dockerfile: "ARG REG=registry.example.com\nFROM ${REG:+registry.example.com/aa}\n", buildArgs: map[string]string{"REG": "="},
			wantErr: "kaniko cuts off"},
		{name: "platform ARG with default", dockerfile: "ARG TARGETARCH=arm64\nFROM registry.example.com/aa:$TARGETARCH\n",
			want: []string{"registry.example.com/aa:arm64"}},
		{name: "platform ARG declared only", dockerfile: "ARG TARGETARCH\nFROM registry.example.com/aa:$TARGETARCH\n",
			wantErr: "predefined by BuildKit"},
		{name: "unresolved expansion error", dockerfile: "FROM ${IMG:?noimage}\n", wantErr: "noimage"},
		{name: "invalid reference", dockerfile: "FROM registry.example.com/UPPER\n", wantErr: "FROM on line 1: \"registry.example.com/UPPER\" is not a valid image reference"},
		{name: "variable in COPY --from", dockerfile: "ARG X=a\nFROM scratch\nCOPY --from=$X /a /a\n", wantErr: "COPY --from on line 3: \"$X\" is not a valid image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Analyze([]byte(tt.dockerfile), tt.buildArgs, "")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Analyze(%q) = %v, want error containing %q", tt.dockerfile, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Analyze(%q) = %v", tt.dockerfile, err)
			}
			if got := names(a); !slices.Equal(got, tt.want) {
				t.Errorf("Analyze(%q).Images = %q, want %q", tt.dockerfile, got, tt.want)
			}
		})
	}
}

// TestPredefinedArgs checks that a runner predefining BuildKit's global
// ARGs (the kaniko runner) gets FROM resolved with them, as its executor
// resolves it, while one that does not (dind's legacy builder) still gets
// the refusal.
func TestPredefinedArgs(t *testing.T) {
	arm := v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	for _, tc := range []struct {
		name, dockerfile, target string
		args                     map[string]string
		want                     string // the final base, or the error it contains
		refusedWithout           bool   // refused when the runner predefines none
	}{
		{"os picks a stage", "FROM r.example/aa:1 AS build-linux\nFROM build-${TARGETOS}\n", "", nil, "r.example/aa:1", true},
		{"platform", "FROM r.example/${BUILDPLATFORM}:$TARGETOS-$TARGETARCH$TARGETVARIANT-$BUILDOS$TARGETPLATFORM\n", "", nil,
			"r.example/linux/arm/v7:linux-armv7-linuxlinux/arm/v7", true},
		{"stage is the target", "FROM r.example/aa:1 AS one\nFROM r.example/${TARGETSTAGE}:2 AS two\nFROM one\n", "two", nil, "r.example/two:2", true},
		{"stage is the last stage", "FROM r.example/aa:1 AS one\nFROM r.example/${TARGETSTAGE}:2 AS last\n", "", nil, "r.example/last:2", true},
		{"stage defaults", "FROM r.example/${TARGETSTAGE}:2\n", "", nil, "r.example/default:2", true},
		{"build arg wins", "FROM r.example/aa:$TARGETARCH\n", "", map[string]string{"TARGETARCH": "s390x"}, "r.example/aa:s390x", false},
		{"ARG default wins", "ARG TARGETARCH=ppc64le\nFROM r.example/aa:$TARGETARCH\n", "", nil, "r.example/aa:ppc64le", false},
		{"ARG without value keeps it", "ARG TARGETARCH\nFROM r.example/aa:$TARGETARCH\n", "", nil, "r.example/aa:arm", true},
		{"nested", "ARG IMG=r.example/aa:${TARGETOS}\nFROM $IMG\n", "", nil, "r.example/aa:linux", true},
		{"other variables still refused", "FROM r.example/aa:$TARGETOSNAME\n", "", nil, "ARG TARGETOSNAME has no value", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Analyze([]byte(tc.dockerfile), tc.args, tc.target, WithPredefinedArgs(arm))
			got := ""
			if err != nil {
				got = err.Error()
			} else if ref := a.FinalBase(); ref != nil {
				got = ref.String()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("Analyze(%q, target %q, WithPredefinedArgs(%v)) gives %q, want %q", tc.dockerfile, tc.target, arm, got, tc.want)
			}
			if _, err := Analyze([]byte(tc.dockerfile), tc.args, tc.target); (err != nil) != tc.refusedWithout {
				t.Errorf("Analyze(%q, target %q) = %v, want refused: %v", tc.dockerfile, tc.target, err, tc.refusedWithout)
			}
		})
	}
}

// TestPredefinedArgsOnly checks a runner that predefines only some of
// BuildKit's ARGs (the dind runner on Docker 20.10, without TARGETSTAGE):
// the others are refused as for a runner that predefines none.
func TestPredefinedArgsOnly(t *testing.T) {
	amd := v1.Platform{OS: "linux", Architecture: "amd64"}
	names := slices.DeleteFunc(PlatformArgs(), func(k string) bool { return k == "TARGETSTAGE" })
	for _, tc := range []struct {
		name, dockerfile string
		args             map[string]string
		want             string // the final base, or the error it contains
	}{
		{"listed", "FROM r.example/aa:$TARGETARCH\n", nil, "r.example/aa:amd64"},
		{"not listed", "FROM r.example/${TARGETSTAGE}:2 AS last\n", nil, "ARG TARGETSTAGE " + platformProblem},
		{"not listed, build arg", "FROM r.example/${TARGETSTAGE}:2 AS last\n", map[string]string{"TARGETSTAGE": "x"}, "r.example/x:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Analyze([]byte(tc.dockerfile), tc.args, "", WithPredefinedArgs(amd, names...))
			got := ""
			if err != nil {
				got = err.Error()
			} else if ref := a.FinalBase(); ref != nil {
				got = ref.String()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("Analyze(%q, WithPredefinedArgs(%v, all but TARGETSTAGE)) gives %q, want %q", tc.dockerfile, amd, got, tc.want)
			}
		})
	}
}

func TestFinalBase(t *testing.T) {
	for _, tc := range []struct {
		name, dockerfile, target string
		args                     map[string]string
		want                     string // "" for scratch
	}{
		{"single stage", "FROM r.example/app:1\nRUN true\n", "", nil, "r.example/app:1"},
		{"last stage wins", "FROM r.example/app:1 AS b\nFROM r.example/cc:2\n", "", nil, "r.example/cc:2"},
		{"through stages", "FROM r.example/app:1 AS b\nFROM b AS c\nFROM C\n", "", nil, "r.example/app:1"},
		{"target", "FROM r.example/app:1 AS b\nFROM r.example/cc:2\n", "B", nil, "r.example/app:1"},
		{"arg", "ARG BASE=r.example/app:1\nFROM ${BASE}\n", "", map[string]string{"BASE": "r.example/zz:9"}, "r.example/zz:9"},
		{"scratch", "FROM r.example/app:1 AS b\nFROM scratch\nCOPY --from=b / /\n", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Analyze([]byte(tc.dockerfile), tc.args, tc.target)
			if err != nil {
				t.Fatalf("Analyze(%q) = %v", tc.dockerfile, err)
			}
			got := ""
			if ref := a.FinalBase(); ref != nil {
				got = ref.String()
			}
			if got != tc.want {
				t.Errorf("Analyze(%q, target %q).FinalBase() = %q, want %q", tc.dockerfile, tc.target, got, tc.want)
			}
		})
	}
}

func TestStageAndBuildImages(t *testing.T) {
	a, err := Analyze([]byte("# syntax=r.example/frontend:1\nFROM r.example/aa:1 AS a\nFROM a\nCOPY --from=r.example/cc:1 / /\nFROM r.example/bb:1\n"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var stage, build []string
	for _, r := range a.StageImages() {
		stage = append(stage, r.Name())
	}
	for _, r := range a.BuildImages() {
		build = append(build, r.Name())
	}
	if want := []string{"r.example/aa:1", "r.example/bb:1"}; !slices.Equal(stage, want) {
		t.Errorf("StageImages() = %q, want %q", stage, want)
	}
	if want := []string{"r.example/aa:1", "r.example/cc:1", "r.example/bb:1"}; !slices.Equal(build, want) {
		t.Errorf("BuildImages() = %q, want %q", build, want)
	}
}

func TestOnbuild(t *testing.T) {
	const base = "registry.example.com/base/onbuild:1"
	for _, tc := range []struct {
		name       string
		dockerfile string
		triggers   []string
		images     []string
		remote     []string
		err        string
	}{
		{name: "no triggers", dockerfile: "FROM " + base + "\n"},
		{name: "copy --from an image", dockerfile: "FROM " + base + "\n", triggers: []string{"RUN true", "COPY --from=registry.example.com/teamb/app:1 /secret /"},
			images: []string{"registry.example.com/teamb/app:1"}},
		{name: "run --mount from an image", dockerfile: "FROM " + base + "\n", triggers: []string{"RUN --mount=type=bind,from=registry.example.com/teamb/app:1,target=/m cat /m/secret"},
			images: []string{"registry.example.com/teamb/app:1"}},
		{name: "copy --from a stage of the dockerfile", dockerfile: "FROM busybox AS tools\nFROM " + base + "\n", triggers: []string{"COPY --from=TOOLS /bin/sh /", "COPY --from=0 /bin/sh /", "COPY --from=22 /x /"},
			images: []string{"index.docker.io/library/22:latest"}},
		{name: "a line break smuggling a FROM", dockerfile: "FROM " + base + "\n", triggers: []string{"RUN true\nFROM evil.example.com/xy"},
			images: []string{"evil.example.com/xy:latest"}},
		{name: "add of a URL", dockerfile: "FROM " + base + "\n", triggers: []string{"ADD https://example.com/x /x", "ADD local /l"}, remote: []string{"https://example.com/x"}},
		{name: "unparsable trigger", dockerfile: "FROM " + base + "\n", triggers: []string{"RUN true", "COPY --from="},
			err: "ONBUILD trigger 2 of base image " + base + ": cannot parse \"COPY --from=\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Analyze([]byte(tc.dockerfile), nil, "")
			if err != nil {
				t.Fatal(err)
			}
			ob, err := a.Onbuild(base, tc.triggers)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Onbuild(%q) = %v, want error containing %q", tc.triggers, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Onbuild(%q) = %v", tc.triggers, err)
			}
			var imgs, remote []string
			for _, img := range ob.Images {
				imgs = append(imgs, img.Ref.Name())
			}
			for _, r := range ob.Remote {
				remote = append(remote, r.Source)
			}
			if !slices.Equal(imgs, tc.images) || !slices.Equal(remote, tc.remote) {
				t.Errorf("Onbuild(%q) = images %q, remote %q; want %q, %q", tc.triggers, imgs, remote, tc.images, tc.remote)
			}
		})
	}
}

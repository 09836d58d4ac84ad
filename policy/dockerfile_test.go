package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestFromImages(t *testing.T) {
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
		{name: "syntax", dockerfile: "# syntax=registry.example.com/frontend:1\nFROM scratch\n",
			want: []string{"registry.example.com/frontend:1"}},
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
		{name: "invalid reference", dockerfile: "FROM registry.example.com/UPPER\n", wantErr: "not a valid image reference"},
		{name: "variable in COPY --from", dockerfile: "ARG X=a\nFROM scratch\nCOPY --from=$X /a /a\n", wantErr: "not a valid image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := FromImages([]byte(tt.dockerfile), tt.buildArgs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FromImages(%s) = %v, %v, want error containing %q", tt.name, refs, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromImages(%s) = %v", tt.name, err)
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.Name())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("FromImages(%s) = %q, want %q", tt.name, got, tt.want)
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
			ref, err := FinalBase([]byte(tc.dockerfile), tc.args, tc.target)
			if err != nil {
				t.Fatalf("FinalBase(%q) = %v", tc.dockerfile, err)
			}
			got := ""
			if ref != nil {
				got = ref.String()
			}
			if got != tc.want {
				t.Errorf("FinalBase(%q, target %q) = %q, want %q", tc.dockerfile, tc.target, got, tc.want)
			}
		})
	}
	if _, err := FinalBase([]byte("FROM r.example/app:1\n"), nil, "nope"); err == nil {
		t.Errorf("FinalBase with an unknown target = nil error, want one")
	}
}

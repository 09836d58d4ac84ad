package socketaudit

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestScanFixtures(t *testing.T) {
	type hit struct {
		line int
		kind string
		// problem is part of the finding's problem.
		problem string
	}
	tests := []struct {
		repo string
		file string
		want []hit
	}{
		{"gitlab-dind", ".gitlab-ci.yml", []hit{{5, "gitlab-ci", "Docker-in-Docker"}, {7, "gitlab-ci", "DOCKER_HOST"}}},
		{"gitlab-socket", ".gitlab-ci.yml", []hit{{6, "gitlab-ci", "Docker socket"}}},
		{"jenkins", "Jenkinsfile", []hit{{5, "jenkinsfile", "Docker socket"}, {13, "jenkinsfile", "privileged"}}},
		{"compose", "docker-compose.yml", []hit{{6, "compose", "Docker socket"}, {9, "compose", "privileged"}}},
		{"k8s", "agent.yaml", []hit{{15, "kubernetes", "hostPath"}}},
		{"runner", "config.toml", []hit{{9, "gitlab-runner", "privileged"}, {10, "gitlab-runner", "volumes"}}},
		{"clean", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.repo, func(t *testing.T) {
			root := filepath.Join("testdata", tc.repo)
			got, err := Scan(root)
			if err != nil {
				t.Fatalf("Scan(%q) = %v", root, err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("Scan(%q) = %d findings %+v, want %d", root, len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				f := got[i]
				if f.File != filepath.Join(root, tc.file) || f.Line != w.line || f.Kind != w.kind || !strings.Contains(f.Problem, w.problem) {
					t.Errorf("Scan(%q)[%d] = %s:%d [%s] %s, want %s:%d [%s] ...%s...", root, i, f.File, f.Line, f.Kind, f.Problem, filepath.Join(root, tc.file), w.line, w.kind, w.problem)
				}
				if f.Text == "" || f.Replacement == "" {
					t.Errorf("Scan(%q)[%d] = %+v, want the line's text and a replacement", root, i, f)
				}
			}
		})
	}
}

// The replacement names the buildgw way for each kind of file.
func TestReplacements(t *testing.T) {
	tests := map[string]string{
		"gitlab-ci":     "/ci/gitlab/buildgw.yml",
		"jenkinsfile":   "buildgwBuild(",
		"gitlab-runner": `volumes = ["/cache"]`,
		"kubernetes":    "buildctl-lite submit",
		"compose":       "buildctl-lite submit",
	}
	for kind, want := range tests {
		if got := replacement(kind); !strings.Contains(got, want) {
			t.Errorf("replacement(%q) = %q, want it to contain %q", kind, got, want)
		}
	}
}

func TestScanAllAtOnce(t *testing.T) {
	got, err := Scan("testdata")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]int{}
	for _, f := range got {
		files[f.File]++
		if strings.Contains(f.File, "clean") {
			t.Errorf("finding in the clean repository: %+v", f)
		}
	}
	if len(files) != 6 || len(got) != 10 {
		t.Errorf("Scan(testdata) = %d findings in %d files (%v), want 10 in 6", len(got), len(files), fmt.Sprint(files))
	}
}

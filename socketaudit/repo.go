// Package socketaudit finds Docker daemon socket exposure: in repositories
// (CI definitions, compose files, Kubernetes manifests, GitLab runner
// configuration) and on a host (processes holding the socket open, a
// socket mode or group wider than root:docker 0660). Each repository
// finding carries the buildgw replacement.
package socketaudit

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Finding is one line that exposes a Docker daemon.
type Finding struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Kind is the kind of file: gitlab-ci, jenkinsfile, compose,
	// kubernetes, gitlab-runner or script.
	Kind string `json:"kind"`
	// Problem says what the line does.
	Problem string `json:"problem"`
	// Text is the line, trimmed.
	Text string `json:"text"`
	// Replacement is the buildgw snippet to use instead.
	Replacement string `json:"replacement"`
}

// maxFileSize skips files that are too large to be configuration.
const maxFileSize = 4 << 20

// skipDirs are never descended into.
var skipDirs = map[string]bool{".git": true, "node_modules": true, "vendor": true, ".terraform": true}

// Scan walks each path (a file or a directory) and returns the findings,
// ordered by file and line.
func Scan(paths ...string) ([]Finding, error) {
	var out []Finding
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p != root && skipDirs[d.Name()] {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			kind := classify(p)
			if kind == "" {
				return nil
			}
			if info, err := d.Info(); err != nil || info.Size() > maxFileSize {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			out = append(out, ScanFile(p, kind, b)...)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scanning %s: %w", root, err)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out, nil
}

// classify names the kind of a file by its name, or "" if it is not one
// the audit reads. YAML that is neither GitLab CI nor compose is read as
// a possible Kubernetes manifest.
func classify(p string) string {
	base := strings.ToLower(filepath.Base(p))
	ext := filepath.Ext(base)
	switch {
	case base == ".gitlab-ci.yml" || strings.HasSuffix(base, ".gitlab-ci.yml") ||
		(strings.Contains(filepath.ToSlash(p), "/.gitlab/") && (ext == ".yml" || ext == ".yaml")):
		return "gitlab-ci"
	case base == "jenkinsfile" || strings.HasPrefix(base, "jenkinsfile.") || strings.HasSuffix(base, ".jenkinsfile"):
		return "jenkinsfile"
	case (strings.HasPrefix(base, "docker-compose") || strings.HasPrefix(base, "compose")) && (ext == ".yml" || ext == ".yaml"):
		return "compose"
	case base == "config.toml":
		return "gitlab-runner"
	case ext == ".yml" || ext == ".yaml":
		return "kubernetes"
	case ext == ".sh":
		return "script"
	}
	return ""
}

var (
	socketPath  = regexp.MustCompile(`(?:/var)?/run/docker\.sock`)
	dindImage   = regexp.MustCompile(`\bdocker:[\w.-]*dind\b`)
	dockerHost  = regexp.MustCompile(`\bDOCKER_HOST\b`)
	hostPath    = regexp.MustCompile(`^\s*hostPath\s*:`)
	kubeKind    = regexp.MustCompile(`(?m)^kind\s*:`)
	privileged  = regexp.MustCompile(`^\s*privileged\s*=\s*true\b`)
	composePriv = regexp.MustCompile(`^\s*privileged\s*:\s*true\b`)
	runnerVols  = regexp.MustCompile(`^\s*volumes\s*=`)
	commentish  = regexp.MustCompile(`^\s*(#|//)`)
)

// ScanFile returns the findings in one file's content, read as kind.
func ScanFile(file, kind string, content []byte) []Finding {
	if kind == "kubernetes" && !kubeKind.Match(content) {
		return nil
	}
	var out []Finding
	add := func(line int, text, problem string) {
		out = append(out, Finding{File: file, Line: line, Kind: kind, Problem: problem, Text: strings.TrimSpace(text), Replacement: replacement(kind)})
	}
	inHostPath := 0 // lines left in a hostPath block
	n := 0
	for raw := range bytes.Lines(content) {
		n++
		line := strings.TrimRight(string(raw), "\r\n")
		if commentish.MatchString(line) {
			continue
		}
		sock := socketPath.MatchString(line)
		switch kind {
		case "gitlab-ci":
			switch {
			case dindImage.MatchString(line):
				add(n, line, "Docker-in-Docker service: needs a privileged runner, whose jobs are root on the host")
			case sock:
				add(n, line, "mounts or uses the host's Docker socket: every job is root on the runner host")
			case dockerHost.MatchString(line):
				add(n, line, "DOCKER_HOST points jobs at a Docker daemon")
			}
		case "jenkinsfile":
			switch {
			case sock:
				add(n, line, "mounts or uses the host's Docker socket: every build is root on the agent host")
			case dockerHost.MatchString(line):
				add(n, line, "DOCKER_HOST points builds at a Docker daemon")
			case strings.Contains(line, "--privileged"):
				add(n, line, "runs a privileged container")
			}
		case "compose", "script":
			if sock {
				add(n, line, "mounts the host's Docker socket into a container: it is root on the host")
			} else if kind == "compose" && composePriv.MatchString(line) {
				add(n, line, "runs a privileged container")
			}
		case "kubernetes":
			if hostPath.MatchString(line) {
				inHostPath = 4
				continue
			}
			if sock && inHostPath > 0 {
				add(n, line, "hostPath volume of the node's Docker socket: the pod is root on the node")
			}
			if inHostPath > 0 {
				inHostPath--
			}
		case "gitlab-runner":
			switch {
			case sock && runnerVols.MatchString(line):
				add(n, line, "runner volumes give every job the host's Docker socket")
			case sock:
				add(n, line, "runner uses the host's Docker socket")
			case privileged.MatchString(line):
				add(n, line, "privileged runner: every job may become root on the host")
			}
		}
	}
	return out
}

// replacement is the buildgw way of doing what a kind of file did with
// the socket.
func replacement(kind string) string {
	switch kind {
	case "gitlab-ci":
		return `include:
  - remote: https://BUILDGW_HOST/ci/gitlab/buildgw.yml
build:
  extends: .buildgw-build
  variables:
    BUILDGW_URL: https://BUILDGW_HOST`
	case "jenkinsfile":
		return `@Library('buildgw') _
def digest = buildgwBuild(server: 'https://BUILDGW_HOST', credentialsId: 'buildgw-token',
                          context: '.', tags: ["registry.example.com/team/app:${env.GIT_COMMIT}"])`
	case "gitlab-runner":
		return `volumes = ["/cache"]   # no docker.sock; jobs build through buildgw
privileged = false`
	case "kubernetes":
		return `# Remove the docker.sock hostPath volume and its volumeMount; build with
# buildctl-lite submit --server https://BUILDGW_HOST -t REGISTRY/REPO:TAG .`
	}
	return `# Remove the docker.sock mount; build with
buildctl-lite submit --server https://BUILDGW_HOST -t REGISTRY/REPO:TAG .`
}

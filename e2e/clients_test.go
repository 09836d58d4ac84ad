package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
)

// gitlabCILocal returns the gitlab-ci-local that scripts/setup --test
// installs into the project.
func gitlabCILocal(t *testing.T) string {
	t.Helper()
	// scripts/setup writes it: gitlab-ci-local run by a Node it supports.
	p := filepath.Join(testenv.ModuleRoot(t), ".tools", "bin", "gitlab-ci-local")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("gitlab-ci-local not found at %s: run scripts/setup --test", p)
	}
	return p
}

// javaHome is JAVA_HOME for Debian's groovy: the environment's, else the
// first JDK under /usr/lib/jvm.
func javaHome(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("JAVA_HOME"); h != "" {
		return h
	}
	for _, pat := range []string{"/usr/lib/jvm/java-17-openjdk-*", "/usr/lib/jvm/default-java", "/usr/lib/jvm/java-*-openjdk-*"} {
		m, _ := filepath.Glob(pat)
		for _, d := range m {
			if _, err := os.Stat(filepath.Join(d, "bin", "java")); err == nil {
				return d
			}
		}
	}
	t.Fatal("no JDK under /usr/lib/jvm for groovy: run scripts/setup --test")
	return ""
}

// run runs a command in dir with env added and returns its combined
// output and exit code.
func run(t *testing.T, dir string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(5*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", name, err)
	}
	return out.String(), 0
}

// gitRepoAt makes dir a git repository cloned from remote (which names
// the project, as gitlab-ci-local reads it), with everything in it
// committed on branch, and returns the commit.
func gitRepoAt(t *testing.T, dir, remote, branch string) string {
	t.Helper()
	env := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "HOME=" + dir}
	for _, args := range [][]string{
		{"init", "-q", "-b", branch},
		{"remote", "add", "origin", remote},
		{"add", "-A"},
		{"commit", "-q", "-m", "init"},
	} {
		if out, code := run(t, dir, env, "git", args...); code != 0 {
			t.Fatalf("git %v: exit %d\n%s", args, code, out)
		}
	}
	out, code := run(t, dir, env, "git", "rev-parse", "HEAD")
	if code != 0 {
		t.Fatalf("git rev-parse: %s", out)
	}
	return string(bytes.TrimSpace([]byte(out)))
}

// copyFile copies src to dst, making dst's directory.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

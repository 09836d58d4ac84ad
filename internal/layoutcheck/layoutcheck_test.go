package layoutcheck

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/buildgw/buildgw"

// root is the repository's root, relative to this package's directory
// (where go test runs).
const root = "../.."

// pkg is what go list -json says of a package.
type pkg struct {
	ImportPath string
	Deps       []string // transitive, without tests
}

// rel is p's path relative to the module ("." for the module itself).
func rel(p string) string {
	if p == module {
		return "."
	}
	return strings.TrimPrefix(p, module+"/")
}

// goList lists the module's packages; with deps, their dependencies too
// (slower).
func goList(t *testing.T, deps bool) []pkg {
	t.Helper()
	args := []string{"list", "-json", "./..."}
	if !deps {
		args = []string{"list", "-find", "-json", "./..."}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// testSupport reports whether the package at rel path p exists for tests
// and benchmarks only: the end-to-end tests, the benchmarks, internal/test*
// and the shared suites (*test, such as builder/runnertest).
func testSupport(p string) bool {
	return p == "e2e" || p == "bench" || strings.HasPrefix(p, "bench/") ||
		strings.HasPrefix(p, "internal/test") || strings.HasSuffix(filepath.Base(p), "test") ||
		p == "internal/layoutcheck"
}

// isStd reports whether import path p is the standard library's (its
// first element has no dot; vendored std packages start with vendor/).
func isStd(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}

// TestBoundaries checks the rules of who may import whom (non-test
// imports, transitively), in the spirit of go-containerregistry's
// depcheck: the wire types stay a leaf any client can take, the
// scheduler never knows a runner or the composition root, the runner
// contract stands alone, and no test helper ships in the product.
func TestBoundaries(t *testing.T) {
	pkgs := goList(t, true)
	for _, r := range []struct {
		pkg    func(p string) bool
		forbid func(dep string) bool
		rule   string
	}{
		{
			pkg:    func(p string) bool { return p == "api" },
			forbid: func(d string) bool { return !isStd(d) },
			rule:   "api uses only the standard library",
		},
		{
			pkg: func(p string) bool { return p == "jobs" || strings.HasPrefix(p, "jobs/") },
			forbid: func(d string) bool {
				return d == module+"/gateway" || d == module+"/runners" || strings.HasPrefix(d, module+"/runners/")
			},
			rule: "jobs never imports runners/... or gateway",
		},
		{
			// The contract may name what a build is made of (its network
			// mode, its Dockerfile's analysis), nothing that does the work.
			pkg: func(p string) bool { return p == "builder" },
			forbid: func(d string) bool {
				switch strings.TrimPrefix(d, module+"/") {
				case "netmode", "dockerfile", "archive":
					return false
				}
				return strings.HasPrefix(d, module+"/")
			},
			rule: "builder imports only the value packages netmode and dockerfile (with archive's errors)",
		},
		{
			pkg:    func(p string) bool { return !testSupport(p) },
			forbid: func(d string) bool { return strings.HasPrefix(d, module+"/internal/test") },
			rule:   "no production package imports internal/test*",
		},
	} {
		matched := 0
		for _, p := range pkgs {
			if !r.pkg(rel(p.ImportPath)) {
				continue
			}
			matched++
			for _, d := range p.Deps {
				if r.forbid(d) {
					t.Errorf("%s depends on %s, but %s", rel(p.ImportPath), d, r.rule)
				}
			}
		}
		if matched == 0 {
			t.Errorf("rule %q matches no package: update it to the layout", r.rule)
		}
	}
}

// layoutRow matches a row of README.md's layout table: its first cell
// holds one or more `path`s.
var layoutRow = regexp.MustCompile("^\\| (`[^|]+`) \\|")
var backticked = regexp.MustCompile("`([^`]+)`")

// readmeLayout returns the paths of the rows of README.md's "## Layout"
// table.
func readmeLayout(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var paths []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = l == "## Layout"
			continue
		}
		if m := layoutRow.FindStringSubmatch(l); in && m != nil {
			for _, b := range backticked.FindAllStringSubmatch(m[1], -1) {
				paths = append(paths, b[1])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("README.md has no \"## Layout\" table")
	}
	return paths
}

// TestREADMELayout checks README.md's layout table against go list ./...:
// every package has a row of its own or its parent's (the nearest
// ancestor with a row), and every path in the table exists.
func TestREADMELayout(t *testing.T) {
	rows := readmeLayout(t)
	for _, p := range rows {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("README.md's layout names %s, which does not exist", p)
		}
	}
	for _, p := range goList(t, false) {
		r := rel(p.ImportPath)
		covered := false
		for a := r; a != "."; a = filepath.Dir(a) {
			if slices.Contains(rows, a) {
				covered = true
				break
			}
		}
		if !covered {
			t.Errorf("package %s has no row in README.md's layout table, nor has any parent of it", r)
		}
	}
}

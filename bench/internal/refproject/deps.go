package refproject

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DepsDockerfile is the second reference build, written the way real
// projects are: the dependency manifest is copied and its dependencies
// "installed" before the sources, so that a change to a source file
// leaves the install step cached. The install writes deps/NAME/fJ.txt
// (files per dependency: %d) for each "NAME VERSION" line of deps.lock;
// the build step counts the sources.
const DepsDockerfile = `# bench/anchors dependency-first reference build (generated)
ARG BASE
FROM ${BASE}
WORKDIR /app
COPY deps.lock ./
RUN while read name ver; do mkdir -p deps/$name && j=0 && while [ $j -lt %d ]; do echo "$name $ver $j" > deps/$name/f$j.txt; j=$((j + 1)); done; done < deps.lock
COPY . .
RUN find src assets -type f | wc -l > /app/build.txt
`

// DepsProject is a generated project built with DepsDockerfile.
type DepsProject struct {
	*Project
	Deps, PerDep int
}

// GenerateDeps writes a project like Generate's with DepsDockerfile and a
// deps.lock of deps dependencies, each of which installs perDep files.
func GenerateDeps(dir string, nfiles int, total int64, seed uint64, deps, perDep int) (*DepsProject, error) {
	p, err := Generate(dir, nfiles, total, seed, 0)
	if err != nil {
		return nil, err
	}
	d := &DepsProject{Project: p, Deps: deps, PerDep: perDep}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(fmt.Sprintf(DepsDockerfile, perDep)), 0o644); err != nil {
		return nil, err
	}
	return d, d.SetLock("1")
}

// SetLock rewrites deps.lock with every dependency at a version ending in
// v, as a dependency update between two commits does: the install step's
// cache key changes.
func (d *DepsProject) SetLock(v string) error {
	var b strings.Builder
	for i := range d.Deps {
		fmt.Fprintf(&b, "dep%02d 1.%d.%s\n", i, i, v)
	}
	return os.WriteFile(filepath.Join(d.Dir, "deps.lock"), []byte(b.String()), 0o644)
}

// VerifyDeps pulls ref and checks that /app holds exactly what a build
// of d's directory as it is now must put there: every file of the
// context, the installed dependencies of its deps.lock, and build.txt.
func VerifyDeps(ctx context.Context, ref string, d *DepsProject, opts ...remote.Option) error {
	want := map[string]string{}
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	sources := 0
	err := filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.Dir, p)
		rel = filepath.ToSlash(rel)
		want["app/"+rel] = sum(b)
		if strings.HasPrefix(rel, "src/") || strings.HasPrefix(rel, "assets/") {
			sources++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the project: %w", err)
	}
	lock, err := os.Open(filepath.Join(d.Dir, "deps.lock"))
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(lock)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for j := range d.PerDep {
			want[fmt.Sprintf("app/deps/%s/f%d.txt", f[0], j)] = sum([]byte(fmt.Sprintf("%s %s %d\n", f[0], f[1], j)))
		}
	}
	lock.Close()
	want["app/build.txt"] = sum([]byte(fmt.Sprintf("%d\n", sources)))

	return check(ctx, ref, want, opts)
}

package buildcontext

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// walker visits, in lexical order, the entries of a context directory that
// survive its ignore file.
type walker struct {
	root string
	pm   *patternmatcher.PatternMatcher
	// keep holds slash paths sent even if excluded: the Dockerfile and the
	// ignore files, which the builder needs to see.
	keep []string
	// wildExceptions is set when some "!" pattern contains glob syntax, so
	// we can't tell from its text which excluded dirs it reaches into; then
	// every excluded dir is walked, as BuildKit does.
	wildExceptions bool

	visit func(rel string, fi fs.FileInfo) error
	// pending holds excluded ancestor dirs of the current position that have
	// not been sent; they are sent just before a re-included descendant so
	// the archive keeps their mode and mtime (BuildKit does the same).
	pending []pendingDir
}

type pendingDir struct {
	rel string
	fi  fs.FileInfo
}

func newWalker(dir string, o *options) (*walker, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("context directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("context %s is not a directory", dir)
	}

	df := filepath.Clean(filepath.FromSlash(o.dockerfile))
	if !filepath.IsLocal(df) {
		return nil, fmt.Errorf("Dockerfile %q must be a path inside the context %s", o.dockerfile, dir)
	}
	switch st, err := os.Stat(filepath.Join(dir, df)); {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return nil, fmt.Errorf("Dockerfile %q not found in context %s", o.dockerfile, dir)
	case err != nil:
		return nil, fmt.Errorf("checking Dockerfile: %w", err)
	case st.IsDir():
		return nil, fmt.Errorf("Dockerfile %q in context %s is a directory", o.dockerfile, dir)
	}
	df = filepath.ToSlash(df)

	patterns, err := readIgnore(dir, df+".dockerignore", ".dockerignore")
	if err != nil {
		return nil, err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("parsing ignore patterns: %w", err)
	}

	// Glob characters per BuildKit's fsutil; '\' escapes only off Windows.
	globChars := "*[]?^"
	if filepath.Separator != '\\' {
		globChars += `\`
	}
	wild := false
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.ContainsAny(withoutTrailingGlob(p), globChars) {
			wild = true
			break
		}
	}

	return &walker{
		root: dir,
		pm:   pm,
		// The Dockerfile-specific ignore file is kept too: a builder such as
		// kaniko re-reads it from the context and would otherwise fall back
		// to .dockerignore.
		keep:           []string{df, ".dockerignore", df + ".dockerignore"},
		wildExceptions: wild,
	}, nil
}

// readIgnore returns the patterns of the first of names (slash paths relative
// to dir) that exists.
func readIgnore(dir string, names ...string) ([]string, error) {
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(name)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening ignore file: %w", err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		return patterns, nil
	}
	return nil, nil
}

func (w *walker) abs(rel string) string {
	return filepath.Join(w.root, filepath.FromSlash(rel))
}

// walk calls visit for every entry to send, parents before children.
func (w *walker) walk(ctx context.Context, visit func(rel string, fi fs.FileInfo) error) error {
	w.visit = visit
	w.pending = nil
	return w.walkDir(ctx, "", patternmatcher.MatchInfo{}, false)
}

// walkDir mirrors docker's archive.TarWithOptions: each path is matched with
// the parent dir's results, and an excluded dir is only descended into if
// an exception could re-include something below it.
func (w *walker) walkDir(ctx context.Context, dirRel string, parent patternmatcher.MatchInfo, excluded bool) error {
	ents, err := os.ReadDir(w.abs(dirRel))
	if err != nil {
		// Like BuildKit: an unreadable excluded dir is not the user's problem.
		if excluded && errors.Is(err, fs.ErrPermission) {
			return nil
		}
		return fmt.Errorf("reading directory: %w", err)
	}
	for _, de := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := path.Join(dirRel, de.Name())
		skip, info, err := w.pm.MatchesUsingParentResults(filepath.FromSlash(rel), parent)
		if err != nil {
			return fmt.Errorf("matching %s against ignore patterns: %w", rel, err)
		}
		if skip && slices.Contains(w.keep, rel) {
			skip = false
		}
		if skip && !(de.IsDir() && w.mayReinclude(rel)) {
			continue
		}

		fi, err := de.Info()
		if err != nil {
			return fmt.Errorf("stat %s: %w", rel, err)
		}
		if !skip {
			if err := checkType(rel, fi.Mode()); err != nil {
				return err
			}
			if err := w.send(rel, fi); err != nil {
				return err
			}
		}
		if !fi.IsDir() {
			continue
		}
		if skip {
			w.pending = append(w.pending, pendingDir{rel, fi})
		}
		if err := w.walkDir(ctx, rel, info, skip); err != nil {
			return err
		}
		if n := len(w.pending); n > 0 && w.pending[n-1].rel == rel {
			w.pending = w.pending[:n-1]
		}
	}
	return nil
}

// send visits rel after any excluded ancestors not yet visited.
func (w *walker) send(rel string, fi fs.FileInfo) error {
	for _, p := range w.pending {
		if err := w.visit(p.rel, p.fi); err != nil {
			return err
		}
	}
	w.pending = w.pending[:0]
	return w.visit(rel, fi)
}

// mayReinclude reports whether something inside the excluded dir dirRel
// could still be sent. Docker's archive checks whether an exception
// pattern starts with the dir; BuildKit also trims a trailing "/*" or "/**"
// and gives up (returns true) for exceptions with wildcards, so "!**/keep"
// works.
func (w *walker) mayReinclude(dirRel string) bool {
	if w.wildExceptions {
		return true
	}
	prefix := dirRel + "/"
	for _, k := range w.keep {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	for _, p := range w.pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(filepath.ToSlash(withoutTrailingGlob(p))+"/", prefix) {
			return true
		}
	}
	return false
}

// withoutTrailingGlob is p without a final "/*" or "/**", which don't
// change which directories the pattern reaches into.
func withoutTrailingGlob(p *patternmatcher.Pattern) string {
	s := p.String()
	sep := string(filepath.Separator)
	s = strings.TrimSuffix(s, sep+"**")
	return strings.TrimSuffix(s, sep+"*")
}

// checkType rejects what a tar build context can't meaningfully carry; a
// device or socket in a context is almost certainly a mistake.
func checkType(rel string, m fs.FileMode) error {
	var kind string
	switch {
	case m.IsRegular(), m.IsDir(), m&fs.ModeSymlink != 0:
		return nil
	case m&fs.ModeNamedPipe != 0:
		kind = "named pipe"
	case m&fs.ModeSocket != 0:
		kind = "socket"
	case m&fs.ModeDevice != 0:
		kind = "device"
	default:
		kind = "irregular file"
	}
	return fmt.Errorf("%s is a %s; a build context may only contain regular files, directories and symlinks (exclude it in .dockerignore)", rel, kind)
}

package compat

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Case is one Dockerfile of the corpus: a directory with the Dockerfile,
// its build context and an optional case.yaml.
type Case struct {
	Name string
	Dir  string
	Spec
}

// Spec is a case.yaml.
type Spec struct {
	Source      string            `yaml:"source"`
	Args        map[string]string `yaml:"args"`
	Target      string            `yaml:"target"`
	ExpectError bool              `yaml:"expect_error"`
	// Modes restores the permission bits of context files, which git
	// does not keep: octal strings by context path.
	Modes map[string]string `yaml:"modes"`
	Note  string            `yaml:"note"`
}

// SpecFile is the name of a case's description; it is not part of the
// build context.
const SpecFile = "case.yaml"

// LoadCases reads every case directory under dir, in name order.
func LoadCases(dir string) ([]Case, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the corpus: %w", err)
	}
	var cs []Case
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		c := Case{Name: e.Name(), Dir: filepath.Join(dir, e.Name())}
		b, err := os.ReadFile(filepath.Join(c.Dir, SpecFile))
		switch {
		case os.IsNotExist(err):
		case err != nil:
			return nil, fmt.Errorf("reading case %s: %w", c.Name, err)
		default:
			dec := yaml.NewDecoder(strings.NewReader(string(b)))
			dec.KnownFields(true)
			if err := dec.Decode(&c.Spec); err != nil && err != io.EOF {
				return nil, fmt.Errorf("case %s: %s: %w", c.Name, SpecFile, err)
			}
		}
		if _, err := os.Stat(filepath.Join(c.Dir, "Dockerfile")); err != nil {
			return nil, fmt.Errorf("case %s: %w", c.Name, err)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// Prepare copies the case's context to dst (which must not exist) without
// case.yaml, replaces the placeholders of its Dockerfile ("{{busybox}}",
// "{{debian}}", "{{base:NAME}}") by the references in bases, and applies
// the case's modes. An unknown placeholder is an error.
func (c Case) Prepare(dst string, bases map[string]string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := copyTree(c.Dir, dst); err != nil {
		return fmt.Errorf("copying case %s: %w", c.Name, err)
	}
	df := filepath.Join(dst, "Dockerfile")
	b, err := os.ReadFile(df)
	if err != nil {
		return err
	}
	s, err := Substitute(string(b), bases)
	if err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	if err := os.WriteFile(df, []byte(s), 0o644); err != nil {
		return err
	}
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.Modes {
			if !yield(k) {
				return
			}
		}
	}) {
		m, err := strconv.ParseUint(c.Modes[p], 8, 32)
		if err != nil || m > 0o7777 {
			return fmt.Errorf("case %s: mode %q of %s is not octal", c.Name, c.Modes[p], p)
		}
		if !filepath.IsLocal(p) {
			return fmt.Errorf("case %s: mode of %s: not a path in the context", c.Name, p)
		}
		if err := os.Chmod(filepath.Join(dst, p), os.FileMode(m&0o777)|modeBits(m)); err != nil {
			return fmt.Errorf("case %s: %w", c.Name, err)
		}
	}
	return nil
}

func modeBits(m uint64) os.FileMode {
	var f os.FileMode
	if m&0o4000 != 0 {
		f |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= os.ModeSticky
	}
	return f
}

// Substitute replaces the placeholders {{NAME}} of a Dockerfile by
// refs[NAME].
func Substitute(df string, refs map[string]string) (string, error) {
	var out strings.Builder
	for {
		i := strings.Index(df, "{{")
		if i < 0 {
			out.WriteString(df)
			return out.String(), nil
		}
		j := strings.Index(df[i:], "}}")
		if j < 0 {
			return "", fmt.Errorf("unclosed placeholder at %q", df[i:])
		}
		key := df[i+2 : i+j]
		ref, ok := refs[key]
		if !ok {
			return "", fmt.Errorf("unknown placeholder {{%s}}", key)
		}
		out.WriteString(df[:i] + ref)
		df = df[i+j+2:]
	}
}

// Placeholders lists the placeholders a Dockerfile uses.
func Placeholders(df string) []string {
	var ks []string
	for {
		i := strings.Index(df, "{{")
		if i < 0 {
			return ks
		}
		j := strings.Index(df[i:], "}}")
		if j < 0 {
			return ks
		}
		if k := df[i+2 : i+j]; !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
		df = df[i+j+2:]
	}
}

// copyTree copies regular files, directories and symlinks from src to dst,
// keeping permission bits, leaving case.yaml out.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == SpecFile {
			return nil
		}
		to := filepath.Join(dst, rel)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case fi.IsDir():
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
			return os.Chmod(to, fi.Mode().Perm())
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(to, b, 0o600); err != nil {
				return err
			}
			// Not WriteFile's mode: the umask would narrow it.
			return os.Chmod(to, fi.Mode().Perm())
		}
		return fmt.Errorf("%s: unsupported file type %s", rel, fi.Mode().Type())
	})
}

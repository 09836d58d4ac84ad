package compat

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Known is a difference the corpus test accepts: case built by builder
// differs from the reference (or fails where it builds), for a reason
// upstream knows about, or, with Owner "buildgw", an open bug of buildgw's
// own that the table shows apart ("B") until it is fixed.
type Known struct {
	Case     string `yaml:"case"`
	Builder  string `yaml:"builder"`
	Reason   string `yaml:"reason"`
	Upstream string `yaml:"upstream"` // where it is tracked
	Owner    string `yaml:"owner"`    // "upstream" (the default) or "buildgw"
}

// Ours reports whether the difference is buildgw's own.
func (k Known) Ours() bool { return k.Owner == "buildgw" }

// LoadKnown reads a known-differences file: a YAML list of Known, each
// with every field set, no (case, builder) twice.
func LoadKnown(path string) ([]Known, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading known differences: %w", err)
	}
	var ks []Known
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&ks); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	seen := map[[2]string]bool{}
	for i, k := range ks {
		if k.Case == "" || k.Builder == "" || k.Reason == "" || k.Upstream == "" {
			return nil, fmt.Errorf("%s: entry %d: case, builder, reason and upstream are all required", path, i+1)
		}
		if k.Owner != "" && k.Owner != "upstream" && k.Owner != "buildgw" {
			return nil, fmt.Errorf("%s: entry %d: owner %q is neither upstream nor buildgw", path, i+1, k.Owner)
		}
		key := [2]string{k.Case, k.Builder}
		if seen[key] {
			return nil, fmt.Errorf("%s: %s on %s listed twice", path, k.Case, k.Builder)
		}
		seen[key] = true
	}
	return ks, nil
}

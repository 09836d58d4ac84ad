package cmd

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// submitArgs says what is missing when submit is not given exactly one
// context directory.
func submitArgs(_ *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("submit needs the build context directory, e.g. `buildctl-lite submit -t REG/APP:TAG .`")
	default:
		return fmt.Errorf("submit takes one build context directory, got %d arguments: %s", len(args), strings.Join(args, " "))
	}
}

// dockerfileIn returns the -f path df as the gateway wants it: relative to
// the context dir, inside it. An absolute path inside the context is made
// relative; anything outside it is refused here, before any upload.
func dockerfileIn(dir, df string) (string, error) {
	if df == "" {
		return "Dockerfile", nil
	}
	rel := filepath.Clean(df)
	if filepath.IsAbs(df) {
		absDir, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("resolving context %s: %w", dir, err)
		}
		if rel, err = filepath.Rel(absDir, rel); err != nil {
			rel = df
		}
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("-f %s is outside the context %s: the Dockerfile must be inside the context directory (-f is relative to it)", df, dir)
	}
	return filepath.ToSlash(rel), nil
}

// checkDestinations refuses, before any upload, destinations that name a
// digest: the gateway pushes to tags, and the digest is what it answers.
func checkDestinations(dests []string) error {
	for _, d := range dests {
		if strings.Contains(d, "@") {
			return fmt.Errorf("-t %s: destinations must be tags (registry/repo:tag), not digests", d)
		}
	}
	return nil
}

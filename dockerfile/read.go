// Package dockerfile reads a build's Dockerfile out of its untrusted
// context and analyzes it once (Analyze): the images it pulls, its
// stages, its final base and its remote sources, for the policy, the base
// store and the runners' caches. The context is read through os.Root;
// nothing here uses a regular expression on a Dockerfile.
package dockerfile

import (
	"fmt"
	"io"
	"os"

	"github.com/buildgw/buildgw/archive"
)

// MaxBytes bounds a Dockerfile read from a context.
const MaxBytes = 1 << 20

// Read reads the Dockerfile rel of the context in ctxDir, without
// following anything out of it, up to MaxBytes.
func Read(ctxDir, rel string) ([]byte, error) {
	root, err := os.OpenRoot(ctxDir)
	if err != nil {
		return nil, fmt.Errorf("opening context: %w", err)
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, fmt.Errorf("reading Dockerfile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading Dockerfile: %w", err)
	}
	if len(b) > MaxBytes {
		return nil, &archive.Error{Entry: rel, Reason: "Dockerfile is larger than 1 MiB", TooLarge: true}
	}
	return b, nil
}

// Load reads the Dockerfile rel of the context in ctxDir, as Read does,
// and analyzes it, as Analyze does.
func Load(ctxDir, rel string, args map[string]string, target string) (*Analysis, error) {
	src, err := Read(ctxDir, rel)
	if err != nil {
		return nil, err
	}
	return Analyze(src, args, target)
}

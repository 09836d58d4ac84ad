package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// ValidateDockerfile checks that rel, the Dockerfile path of a build spec
// ("Dockerfile" when empty), names a regular file inside the context dir,
// following symlinks only as long as they stay inside. Rejections are *Error
// with Entry set to rel. It returns the cleaned relative path.
func ValidateDockerfile(dir, rel string) (string, error) {
	if rel == "" {
		rel = "Dockerfile"
	}
	clean, reason := cleanPath(rel, defaultMaxNameLen)
	if reason != "" {
		return "", &Error{Entry: rel, Reason: "dockerfile: " + reason}
	}
	notFile := &Error{Entry: rel, Reason: "dockerfile is not a regular file"}
	if clean == "." {
		return "", notFile
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("opening context directory: %w", err)
	}
	defer root.Close()

	// Resolve symlinks ourselves for a clear error; os.Root would refuse an
	// escape too, but with an error that cannot be told apart.
	_, reason, err = resolveInRoot(root, clean)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", clean, err)
	}
	if reason != "" {
		return "", &Error{Entry: rel, Reason: "dockerfile " + reason}
	}
	// Let the kernel (confined by os.Root) have the last word.
	fi, err := root.Stat(clean)
	if err != nil {
		return "", &Error{Entry: rel, Reason: "dockerfile does not exist"}
	}
	if !fi.Mode().IsRegular() {
		return "", notFile
	}
	return clean, nil
}

// resolveInRoot resolves the symlinks in the cleaned relative path p, one
// component at a time, and returns the path it leads to, or why it does not
// lead to an existing entry inside root.
func resolveInRoot(root *os.Root, p string) (resolved, reason string, err error) {
	var cur []string
	todo := strings.Split(p, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return "", "is reached through a symlink pointing outside the context", nil
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := strings.Join(append(cur[:len(cur):len(cur)], c), "/")
		// cur holds no symlinks, so Lstat inspects exactly this component.
		fi, err := root.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return "", "does not exist", nil
		}
		if err != nil {
			return "", "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = append(cur, c)
			continue
		}
		if links++; links > maxSymlinks {
			return "", "is reached through too many symlinks", nil
		}
		target, err := root.Readlink(next)
		if err != nil {
			return "", "", err
		}
		if path.IsAbs(target) {
			return "", "is reached through a symlink pointing outside the context", nil
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return strings.Join(cur, "/"), "", nil
}

package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// savedLogin is what login writes: config.json in the user's config
// directory, mode 0600.
type savedLogin struct {
	Server string `json:"server"`
	Token  string `json:"token"`
}

// loginFile returns the path of the saved login: dir/config.json, dir
// defaulting to os.UserConfigDir()/buildgw.
func loginFile(dir string) (string, error) {
	if dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("finding the config directory: %w", err)
		}
		dir = filepath.Join(base, "buildgw")
	}
	return filepath.Join(dir, "config.json"), nil
}

// loadLogin returns the saved login, or nil if there is none.
func loadLogin(dir string) (*savedLogin, error) {
	path, err := loginFile(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading saved login: %w", err)
	}
	var l savedLogin
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("reading saved login %s: %w", path, err)
	}
	return &l, nil
}

// saveLogin writes l whole and readable by its owner only.
func saveLogin(dir string, l savedLogin) (string, error) {
	path, err := loginFile(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return "", fmt.Errorf("saving login: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600; say so in case that ever changes.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving login: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving login: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("saving login: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("saving login: %w", err)
	}
	return path, nil
}

// sameServer compares gateway URLs, ignoring a trailing slash and the
// case of scheme and host.
func sameServer(a, b string) bool {
	norm := func(s string) string {
		u, err := url.Parse(strings.TrimRight(s, "/"))
		if err != nil {
			return s
		}
		u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
		return u.String()
	}
	return norm(a) == norm(b)
}

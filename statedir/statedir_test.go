package statedir_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/statedir"
)

func TestAcquire(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l, err := statedir.Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire(%s) = %v", dir, err)
	}
	// A second holder, even in the same process, is refused at once.
	_, err = statedir.Acquire(dir)
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second Acquire(%s) = %v, want in use by pid %d", dir, err, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = statedir.Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release = %v", err)
	}
	l.Release()
}

func TestEvidence(t *testing.T) {
	tests := []struct {
		name  string
		files []string // relative; a trailing / makes a directory
		skip  []string
		want  string
	}{
		{"new", nil, nil, ""},
		{"empty directories of a failed start", []string{"jobs/", "logs/", "trash/", "base-images/blobs/"}, nil, ""},
		{"lock and lost+found", []string{statedir.LockFile, "lost+found/x"}, nil, ""},
		{"skipped job store", []string{"jobs.db"}, []string{"jobs.db"}, ""},
		{"a build log", []string{"jobs/", "logs/abc.log"}, nil, "logs/abc.log"},
		{"a queued workspace", []string{"jobs/abc/context/Dockerfile"}, nil, "jobs/abc/context/Dockerfile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(dir, f)
				if strings.HasSuffix(f, "/") {
					os.MkdirAll(p, 0o700)
					continue
				}
				os.MkdirAll(filepath.Dir(p), 0o700)
				os.WriteFile(p, []byte("x"), 0o600)
			}
			got, err := statedir.Evidence(dir, tc.skip...)
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			if tc.want != "" {
				want = filepath.Join(dir, tc.want)
			}
			if got != want {
				t.Errorf("Evidence(%v) = %q, want %q", tc.files, got, want)
			}
		})
	}
}

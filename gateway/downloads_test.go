package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDownloadsDirValidated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	tests := []struct {
		dir  string
		want bool // a downloads_dir error
	}{
		{t.TempDir(), false},
		{"", false},
		{"dl", true},
		{"/nonexistent/dl", true},
		{file, true},
	}
	for _, tc := range tests {
		// Validate finds a relative path in the file alone, New the rest.
		c := DefaultConfig()
		c.DownloadsDir = tc.dir
		err := errors.Join(c.Validate(), checkDownloadsDir(tc.dir))
		// Other settings are missing; only the downloads_dir complaint matters.
		if got := err != nil && strings.Contains(err.Error(), "downloads_dir"); got != tc.want {
			t.Errorf("Validate+checkDownloadsDir(downloads_dir: %q) = %v, want a downloads_dir error: %v", tc.dir, err, tc.want)
		}
	}
}

func TestDownloadsDirDefault(t *testing.T) {
	if got := downloadsDir("/srv/dl"); got != "/srv/dl" {
		t.Errorf("downloadsDir(/srv/dl) = %q, want it unchanged", got)
	}
	// The test binary's directory holds no buildctl-lite.
	if got := downloadsDir(""); got != "" {
		t.Errorf(`downloadsDir("") = %q beside a binary without buildctl-lite, want ""`, got)
	}
}

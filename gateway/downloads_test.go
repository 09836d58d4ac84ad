package gateway

import (
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
		want string // "" for valid
	}{
		{t.TempDir(), ""},
		{"dl", "downloads_dir"},
		{"/nonexistent/dl", "downloads_dir"},
		{file, "downloads_dir"},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		c.Listen = "127.0.0.1:0"
		c.DownloadsDir = tc.dir
		err := c.Validate()
		// Other settings are missing; only the downloads_dir complaint matters.
		got := err != nil && strings.Contains(err.Error(), "downloads_dir")
		if got != (tc.want != "") {
			t.Errorf("Validate(downloads_dir: %q) = %v, want a downloads_dir error: %v", tc.dir, err, tc.want != "")
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

package kaniko

import (
	"os"
	"path/filepath"
	"testing"
)

func TestExecutableBy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs files owned by another user: run as root")
	}
	dir := t.TempDir()
	// t.TempDir's directories are private; open the way to dir.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const uid, gid = 12345, 23456
	mk := func(rel string, dirMode, fileMode os.FileMode, owner, group int) string {
		p := filepath.Join(dir, rel, "exe")
		if err := os.MkdirAll(filepath.Dir(p), dirMode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Dir(p), dirMode)
		if err := os.WriteFile(p, []byte("x"), fileMode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, fileMode)
		os.Chown(filepath.Dir(p), owner, group)
		os.Chown(p, owner, group)
		return p
	}
	tests := []struct {
		name string
		path string
		want bool
	}{
		{"open", mk("open", 0o755, 0o755, 0, 0), true},
		{"private directory", mk("private", 0o700, 0o755, 0, 0), false},
		{"file not executable by others", mk("noexec", 0o755, 0o750, 0, 0), false},
		{"group may", mk("group", 0o750, 0o750, 0, gid), true},
		{"owner may", mk("owner", 0o700, 0o700, uid, 0), true},
		{"owner may not, others may", mk("owner-not", 0o755, 0o605, uid, 0), false},
		{"missing", filepath.Join(dir, "missing"), false},
	}
	for _, tc := range tests {
		if got := ExecutableBy(tc.path, uid, gid); got != tc.want {
			t.Errorf("ExecutableBy(%q) [%s] = %v, want %v", tc.path, tc.name, got, tc.want)
		}
	}
}

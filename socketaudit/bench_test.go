package socketaudit

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// benchTree writes a repository-like tree: n directories, each with a
// .gitlab-ci.yml, a compose file, a Kubernetes manifest and Go sources
// the audit skips, one in ten with a socket mount.
func benchTree(b *testing.B, n int) string {
	b.Helper()
	root := b.TempDir()
	for i := 0; i < n; i++ {
		d := filepath.Join(root, fmt.Sprintf("svc%03d", i))
		os.MkdirAll(filepath.Join(d, "deploy"), 0o755)
		sock := ""
		if i%10 == 0 {
			sock = "      - /var/run/docker.sock:/var/run/docker.sock\n"
		}
		os.WriteFile(filepath.Join(d, ".gitlab-ci.yml"), []byte("build:\n  image: golang:1\n  script:\n    - go build ./...\n"), 0o644)
		os.WriteFile(filepath.Join(d, "docker-compose.yml"), []byte("services:\n  app:\n    image: app\n    volumes:\n      - ./data:/data\n"+sock), 0o644)
		os.WriteFile(filepath.Join(d, "deploy", "app.yaml"), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 2\n"), 0o644)
		for j := 0; j < 5; j++ {
			os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d.go", j)), make([]byte, 4096), 0o644)
		}
	}
	return root
}

// BenchmarkScan compares the audit of a tree with merely walking it and
// reading the same files, its floor.
func BenchmarkScan(b *testing.B) {
	root := benchTree(b, 200)
	b.Run("read", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() && classify(p) != "" {
					os.ReadFile(p)
				}
				return nil
			})
		}
	})
	b.Run("audit", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			f, err := Scan(root)
			if err != nil || len(f) != 20 {
				b.Fatalf("Scan = %d findings, %v, want 20", len(f), err)
			}
		}
	})
}

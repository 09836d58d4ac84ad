package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/buildcontext"
)

// benchProject writes a project shaped like the overhead benchmark's
// reference project: files of 128 B to 1 MiB in nested directories, a third
// of the bytes random and the rest compressible text.
func benchProject(b *testing.B, files int, total int64) string {
	b.Helper()
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("gateway build context layer sandbox registry digest kaniko tenant policy cache")
	left := total
	for i := range files {
		size := int64(128 + rng.IntN(8<<10))
		switch {
		case i%50 == 0:
			size = int64(rng.IntN(1 << 20))
		case i%8 == 0:
			size = int64(8<<10 + rng.IntN(122<<10))
		}
		if i == files-1 || size > left {
			size = max(left, 0)
		}
		left -= size
		var buf bytes.Buffer
		random := i%3 == 0
		for int64(buf.Len()) < size {
			if random {
				buf.WriteByte(byte(rng.Uint32()))
			} else {
				buf.WriteString(words[rng.IntN(len(words))] + " ")
			}
		}
		p := filepath.Join(dir, []string{"src", "assets", "vendor"}[i%3], fmt.Sprintf("d%d", i%17), fmt.Sprintf("e%d", i%5), fmt.Sprintf("f%d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, buf.Bytes()[:size], 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY . /\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkExtract extracts the reference-shaped context (1500 files,
// 30 MiB, gzip'd as buildctl-lite sends it) into a fresh directory.
//
//	go test -run XXX -bench Extract -count 5 ./builder/archive/
func BenchmarkExtract(b *testing.B) {
	dir := benchProject(b, 1500, 30<<20)
	var tgz bytes.Buffer
	if _, err := buildcontext.Write(context.Background(), &tgz, dir); err != nil {
		b.Fatal(err)
	}
	for _, owner := range []bool{false, true} {
		b.Run(fmt.Sprintf("chown=%v", owner), func(b *testing.B) {
			var opts []archive.Option
			if owner {
				opts = append(opts, archive.WithOwner(os.Getuid(), os.Getgid()))
			}
			b.SetBytes(int64(tgz.Len()))
			for i := range b.N {
				dst := filepath.Join(b.TempDir(), fmt.Sprint(i))
				if err := os.Mkdir(dst, 0o755); err != nil {
					b.Fatal(err)
				}
				if _, err := archive.Extract(context.Background(), bytes.NewReader(tgz.Bytes()), dst, archive.Limits{}, opts...); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dst)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkWrite makes the same context's archive, as buildctl-lite does.
func BenchmarkWrite(b *testing.B) {
	dir := benchProject(b, 1500, 30<<20)
	var out bytes.Buffer
	for b.Loop() {
		out.Reset()
		if _, err := buildcontext.Write(context.Background(), &out, dir); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(out.Len()))
	}
}

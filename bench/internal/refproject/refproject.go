// Package refproject generates the reference project that the build
// benchmarks share (so that they build the same bytes for a seed) and
// checks the images built from it.
package refproject

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// File is one file of the project.
type File struct {
	rel    string
	size   int64
	random bool
	sum    string
}

// Project is a generated reference project.
type Project struct {
	Dir         string
	Files       []File
	Total       int64
	RandomBytes int64
	GenFiles    int
}

// Copied reports whether stage 2 copies rel (to /app/rel).
func Copied(rel string) bool {
	return strings.HasPrefix(rel, "src/") || strings.HasPrefix(rel, "assets/")
}

// GenContent is what the Dockerfile's RUN writes into gen/f<i>.txt.
func GenContent(i int) string {
	return fmt.Sprintf("generated %d %d\n", i, i*7919%10007)
}

// Dockerfile is the reference build; %d is the number of files RUN writes.
const Dockerfile = `# bench/overhead reference build (generated)
ARG BASE
FROM ${BASE} AS stage1
COPY . /src
RUN mkdir -p /gen && i=0 && while [ $i -lt %d ]; do echo "generated $i $((i * 7919 %% 10007))" > /gen/f$i.txt; i=$((i + 1)); done

FROM ${BASE}
COPY --from=stage1 /src/src /app/src
COPY --from=stage1 /src/assets /app/assets
COPY --from=stage1 /gen /app/gen
`

var words = strings.Fields(`func return if else for range var const type struct interface map chan go defer select case switch
package import error nil true false string int byte len make append copy delete panic recover context ctx err
request response handler server client build image layer digest registry manifest config token upload stream`)

// Generate writes a deterministic Project: nfiles files of mixed sizes
// (most small, a few of 0.5-2 MiB before scaling) summing to exactly
// total bytes, text-like (compressible) or random (incompressible), and
// the Dockerfile.
func Generate(dir string, nfiles int, total int64, seed uint64, genFiles int) (*Project, error) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	p := &Project{Dir: dir, GenFiles: genFiles}
	sizes := make([]float64, nfiles)
	var sum float64
	for i := range nfiles {
		var f File
		switch r := rng.Float64(); {
		case r < 0.6:
			f.rel = fmt.Sprintf("src/pkg%02d/file%04d.go", rng.IntN(40), i)
			f.random = rng.Float64() < 0.1
		case r < 0.8:
			f.rel = fmt.Sprintf("assets/%s/a%04d.bin", []string{"img", "fonts", "data"}[rng.IntN(3)], i)
			f.random = true
		default:
			f.rel = fmt.Sprintf("vendor/mod%02d/sub%d/file%04d.txt", rng.IntN(20), rng.IntN(3), i)
			f.random = rng.Float64() < 0.25
		}
		lo, hi := 256.0, 16384.0
		switch c := rng.Float64(); {
		case c < 0.8:
		case c < 0.98:
			lo, hi = 16<<10, 256<<10
		default:
			lo, hi = 512<<10, 2<<20
		}
		sizes[i] = lo * math.Pow(hi/lo, rng.Float64())
		sum += sizes[i]
		p.Files = append(p.Files, f)
	}
	scale := float64(total) / sum
	for i := range p.Files {
		s := max(int64(sizes[i]*scale), 1)
		if i == len(p.Files)-1 {
			s = max(total-p.Total, 1)
		}
		p.Files[i].size = s
		p.Total += s
	}

	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	buf := make([]byte, 0, 4<<20)
	for i := range p.Files {
		f := &p.Files[i]
		frng := rand.New(rand.NewPCG(seed, uint64(i)+1))
		buf = buf[:0]
		if f.random {
			for int64(len(buf)) < f.size {
				buf = binary.LittleEndian.AppendUint64(buf, frng.Uint64())
			}
			p.RandomBytes += f.size
		} else {
			for int64(len(buf)) < f.size {
				n := 2 + frng.IntN(8)
				buf = append(buf, strings.Repeat("\t", frng.IntN(3))...)
				for w := 0; w < n; w++ {
					buf = append(buf, words[frng.IntN(len(words))]...)
					buf = append(buf, ' ')
				}
				buf = strconv.AppendInt(buf, int64(frng.IntN(1000)), 10)
				buf = append(buf, '\n')
			}
		}
		buf = buf[:f.size]
		h := sha256.Sum256(buf)
		f.sum = hex.EncodeToString(h[:])
		full := filepath.Join(dir, filepath.FromSlash(f.rel))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(full, buf, 0o644); err != nil {
			return nil, err
		}
		if err := os.Chtimes(full, mtime, mtime); err != nil {
			return nil, err
		}
	}
	df := fmt.Sprintf(Dockerfile, genFiles)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// verifyImage pulls ref back and checks its flattened filesystem: every
// generated file with its content, every copied file with its content,
// and nothing else under /app.
// Verify pulls ref and checks that /app holds exactly what the build of
// p must put there; opts are added to the pull's (an account, say).
func Verify(ctx context.Context, ref string, p *Project, opts ...remote.Option) error {
	want := map[string]string{}
	for _, f := range p.Files {
		if Copied(f.rel) {
			want["app/"+f.rel] = f.sum
		}
	}
	for i := 0; i < p.GenFiles; i++ {
		h := sha256.Sum256([]byte(GenContent(i)))
		want[fmt.Sprintf("app/gen/f%d.txt", i)] = hex.EncodeToString(h[:])
	}
	return check(ctx, ref, want, opts)
}

// check pulls ref and compares the regular files under /app with want
// (path without the leading slash to sha256): every one there with its
// content, nothing else.
func check(ctx context.Context, ref string, want map[string]string, opts []remote.Option) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, append([]remote.Option{remote.WithContext(ctx)}, opts...)...)
	if err != nil {
		return fmt.Errorf("pulling: %w", err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string]bool{}
	var problems []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading image: %w", err)
		}
		n := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if !strings.HasPrefix(n, "app/") || hdr.Typeflag == tar.TypeDir {
			continue
		}
		sum, ok := want[n]
		if !ok {
			problems = append(problems, "unexpected /"+n)
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			problems = append(problems, fmt.Sprintf("/%s is type %q, not a file", n, hdr.Typeflag))
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			return fmt.Errorf("reading image: %w", err)
		}
		if hex.EncodeToString(h.Sum(nil)) != sum {
			problems = append(problems, "wrong content of /"+n)
		}
		seen[n] = true
	}
	var missing []string
	for n := range want {
		if !seen[n] {
			missing = append(missing, "/"+n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d files missing (e.g. %s)", len(missing), missing[0]))
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], fmt.Sprintf("and %d more", len(problems)-3))
		}
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// ChangeOne rewrites one source file that the build copies into the
// image with new content of the same size (different for every n), as an
// edit between two commits does, and returns its path in the project.
func (p *Project) ChangeOne(n int) (string, error) {
	var copied []int
	for i, f := range p.Files {
		if Copied(f.rel) && strings.HasPrefix(f.rel, "src/") && f.size >= 64 {
			copied = append(copied, i)
		}
	}
	if len(copied) == 0 {
		return "", errors.New("no source file to change")
	}
	f := &p.Files[copied[n%len(copied)]]
	full := filepath.Join(p.Dir, filepath.FromSlash(f.rel))
	b, err := os.ReadFile(full)
	if err != nil {
		return "", err
	}
	copy(b, fmt.Sprintf("// change %d\n", n))
	if err := os.WriteFile(full, b, 0o644); err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	f.sum = hex.EncodeToString(h[:])
	return f.rel, nil
}

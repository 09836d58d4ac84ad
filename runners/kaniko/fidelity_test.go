package kaniko

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/internal/testenv"
)

// fidelityDockerfile and noPasswdDockerfile build what upstream kaniko
// v1.24.0 builds differently from Docker; third_party/kaniko/patches fix
// it. The expectations in TestDockerFidelity are what Docker's builder
// gives for the same Dockerfile and context. Two builds, so that the
// failing WORKDIR of the second does not hide the first one's results.
const fidelityDockerfile = `ARG BASE
FROM ${BASE}
RUN mkdir -m 0711 /exist && mkdir -m 1777 /out && \
    echo 'alice:x:1000:1000::/home/alice:/bin/sh' >> /etc/passwd && \
    printf 'staff:x:50:\nalice:x:1000:\n' >> /etc/group
COPY d700 /new
COPY d700 /a/b/c
COPY d700 /exist
COPY ln.txt /ln.txt
COPY linkdir /fromlinkdir
COPY escape /escape
USER alice:staff
RUN echo "$(id -u):$(id -g):$(id -G)" > /out/named
USER 1234
RUN echo "$(id -u):$(id -g):$(id -G)" > /out/numeric
`

const fromStageDockerfile = `ARG BASE
FROM ${BASE} AS links
RUN echo content > /tmp/file && ln -s /tmp/file /tmp/link
FROM ${BASE}
COPY --from=links /tmp/link /copied/link
COPY --from=links /bin/sh /copied/sh
`

const noPasswdDockerfile = `ARG BASE
FROM ${BASE}
RUN rm /etc/passwd /etc/group && mkdir -m 1777 /out
USER root
WORKDIR /w
USER 1234:5678
RUN echo "$(id -u):$(id -g):$(id -G)" > /out/numgroup
`

// destLinksDockerfile copies into destinations reached through hostile
// symlinks: each must resolve inside the image root, as BuildKit's
// RootPath resolves it, whatever ".." or absolute target the link holds.
const destLinksDockerfile = `ARG BASE
FROM ${BASE}
RUN ln -s ../../../../../../outside/dir /up && ln -s /absdir/target /abs && \
    mkdir /real && ln -s ../../../../real/inner /real/up
COPY target.txt /up/
COPY target.txt /abs/
COPY target.txt /real/up/sub/
`

// TestDockerFidelity builds fidelityDockerfile and noPasswdDockerfile
// with the real executor in the sandbox and checks the image against Docker's behaviour:
//   - patch 0001: COPY of a directory creates a missing destination (and
//     its parents) 0755 and leaves an existing one as it was; what is
//     inside keeps its modes;
//   - patch 0002: a COPY source that is a symlink is copied as what it
//     points to (file or directory, from the context or a stage); links
//     inside a directory stay links;
//   - patch 0003: USER user:group runs RUN with that group;
//   - patch 0004: a numeric USER without a passwd entry runs with gid 0;
//   - patch 0005: USER root and WORKDIR work without /etc/passwd;
//   - patch 0009: a COPY destination's symlinks resolve inside the image
//     root, and a link to a missing directory creates it.
func TestDockerFidelity(t *testing.T) {
	exe, regHost, base, store, _ := cacheTestEnv(t)
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := os.ReadFile(testenv.BusyboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := func(mode int64) fsEntry { return fsEntry{typ: tar.TypeDir, mode: mode} }
	file := func(mode int64, data string) fsEntry { return fsEntry{typ: tar.TypeReg, mode: mode, data: data} }
	link := func(target string) fsEntry { return fsEntry{typ: tar.TypeSymlink, mode: 0o777, link: target} }
	type want struct {
		patch, path string
		entry       fsEntry
	}
	for _, build := range []struct {
		name, dockerfile string
		want             []want
	}{
		{"copy and user", fidelityDockerfile, []want{
			{"0001", "new", dir(0o755)},
			{"0001", "new/sub", dir(0o750)},
			{"0001", "new/sub/f", file(0o640, "f\n")},
			{"0001", "a", dir(0o755)},
			{"0001", "a/b", dir(0o755)},
			{"0001", "a/b/c", dir(0o755)},
			{"0001", "a/b/c/sub", dir(0o750)},
			{"0001", "exist", dir(0o711)},
			{"0002", "ln.txt", file(0o644, "target\n")},
			{"0002", "new/sub/inlink", link("f")},
			{"0002", "new/dangling", link("../nowhere")},
			{"0002", "fromlinkdir", dir(0o755)},
			{"0002", "fromlinkdir/sub/f", file(0o640, "f\n")},
			// Resolved inside the context, never out of it.
			{"0002", "escape", file(0o644, "target\n")},
			{"0003", "out/named", file(0o644, "1000:50:50\n")},
			{"0004", "out/numeric", file(0o644, "1234:0:0\n")},
		}},
		{"copy from a stage", fromStageDockerfile, []want{
			{"0002", "copied/link", file(0o644, "content\n")},
			{"0002", "copied/sh", file(0o755, string(busybox))},
		}},
		{"destination through links", destLinksDockerfile, []want{
			{"0009", "up", link("../../../../../../outside/dir")},
			{"0009", "outside/dir/target.txt", file(0o644, "target\n")},
			{"0009", "absdir/target/target.txt", file(0o644, "target\n")},
			{"0009", "real/inner/sub/target.txt", file(0o644, "target\n")},
		}},
		{"no passwd", noPasswdDockerfile, []want{
			{"0005", "w", dir(0o755)},
			{"0005", "out/numgroup", file(0o644, "1234:5678:5678\n")},
		}},
	} {
		t.Run(build.name, func(t *testing.T) {
			req := netRequest(t, r, build.dockerfile, "", map[string]string{"BASE": base}, regHost)
			writeFidelityContext(t, r, req.ContextDir)
			img, log := buildWithBases(t, r, store, req)
			got := imageEntries(t, img)
			for _, w := range build.want {
				if e, ok := got[w.path]; !ok {
					t.Errorf("patch %s: /%s not in the image", w.patch, w.path)
				} else if e != w.entry {
					t.Errorf("patch %s: /%s = %v, want %v (Docker's)", w.patch, w.path, e, w.entry)
				}
			}
			if t.Failed() {
				t.Logf("build log:\n%s", log)
			}
		})
	}
}

// fsEntry is what TestDockerFidelity compares of a file in an image.
type fsEntry struct {
	typ  byte
	mode int64
	link string
	data string
}

func (e fsEntry) String() string {
	data := fmt.Sprintf("%q", e.data)
	if len(e.data) > 64 {
		data = fmt.Sprintf("%d bytes sha256:%x", len(e.data), sha256.Sum256([]byte(e.data)))
	}
	return fmt.Sprintf("type %c mode %o link %q content %s", e.typ, e.mode, e.link, data)
}

// imageEntries is img's flattened filesystem by path (no leading or
// trailing slash).
func imageEntries(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	got := map[string]fsEntry{}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		e := fsEntry{typ: h.Typeflag, mode: h.Mode & 0o7777, link: h.Linkname}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			e.data = string(b)
		}
		got[strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")] = e
	}
}

// writeFidelityContext writes fidelityDockerfile's context: d700/ (0700)
// with sub/ (0750), sub/f (0640), a link inside and a dangling one;
// ln.txt, a link to target.txt; linkdir, a link to d700; escape, a link
// that climbs out of the context (Docker resolves it inside: target.txt).
func writeFidelityContext(t *testing.T, r *Runner, ctxDir string) {
	t.Helper()
	var paths []string
	do := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string {
		full := filepath.Join(ctxDir, rel)
		paths = append(paths, full)
		return full
	}
	do(os.Mkdir(p("d700"), 0o755))
	do(os.Mkdir(p("d700/sub"), 0o755))
	do(os.WriteFile(p("d700/sub/f"), []byte("f\n"), 0o644))
	do(os.Symlink("f", p("d700/sub/inlink")))
	do(os.Symlink("../nowhere", p("d700/dangling")))
	do(os.WriteFile(p("target.txt"), []byte("target\n"), 0o644))
	do(os.Symlink("target.txt", p("ln.txt")))
	do(os.Symlink("d700", p("linkdir")))
	do(os.Symlink("../../../target.txt", p("escape")))
	do(os.Chmod(filepath.Join(ctxDir, "d700/sub/f"), 0o640))
	do(os.Chmod(filepath.Join(ctxDir, "d700/sub"), 0o750))
	do(os.Chmod(filepath.Join(ctxDir, "d700"), 0o700))
	if uid, gid, differs := r.Owner(); differs {
		for _, p := range paths {
			do(os.Lchown(p, uid, gid))
		}
	}
}

// TestSymlinkSourceCacheKey: with patch 0002 COPY copies what a source
// symlink points to, so the layer cache key must change with the target's
// content, or a cached RUN after the COPY gives the old content.
func TestSymlinkSourceCacheKey(t *testing.T) {
	exe, regHost, base, store, cacheDir := cacheTestEnv(t)
	r, err := New(WithExecutor(exe), WithLayerCache(filepath.Join(cacheDir, "layers")))
	if err != nil {
		t.Fatal(err)
	}
	const df = "ARG BASE\nFROM ${BASE}\nCOPY ln.txt /ln.txt\nRUN cat /ln.txt > /seen\n"
	for _, content := range []string{"first\n", "second\n"} {
		req := netRequest(t, r, df, "", map[string]string{"BASE": base}, regHost)
		req.Tenant = "namespace_path:team-a"
		target, link := filepath.Join(req.ContextDir, "target.txt"), filepath.Join(req.ContextDir, "ln.txt")
		if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("target.txt", link); err != nil {
			t.Fatal(err)
		}
		if uid, gid, differs := r.Owner(); differs {
			for _, p := range []string{target, link} {
				if err := os.Lchown(p, uid, gid); err != nil {
					t.Fatal(err)
				}
			}
		}
		img, log := buildWithBases(t, r, store, req)
		if got, err := fileOf(img, "seen"); err != nil || got != content {
			t.Errorf("RUN after COPY of a link to a file holding %q saw %q (%v)\n%s", content, got, err, log)
		}
	}
}

// Package runnertest is the conformance suite every builder.Runner must
// pass, in the manner of distribution's storage driver testsuites: one set
// of real builds, independent of how a runner works, that each runner's own
// tests run against a real instance of it.
//
//	func TestConformance(t *testing.T) {
//		runnertest.Run(t, func(t *testing.T) builder.Runner { return newRunner(t) })
//	}
//
// The builds pull a busybox base image from an in-memory registry on
// loopback (see internal/testenv), so the suite needs no network. It checks
// what the gateway relies on: Dockerfile semantics, the build log, failure
// and cancellation, cleanup, and the isolation of the sandbox from the
// gateway's secrets and the rest of the host.
package runnertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/builder"
	df "github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/workspace"
)

// Owner is implemented by runners whose sandboxes run as a host user other
// than the caller's. The suite then hands each workspace, build context and
// output directory to that user, as jobs.Manager does (see
// jobs.WithWorkspaceOwner).
type Owner interface {
	Owner() (uid, gid int, differs bool)
}

// SecretEnv is the variable of the runner's own environment that holds a
// secret during the suite. No build may see its value.
const SecretEnv = "BUILDGW_TEST_REGISTRY_PASSWORD"

// buildTimeout, stretched by testenv.Scale, bounds every build of the
// suite, so a hung runner fails the test instead of the whole test
// binary's timeout.
const buildTimeout = 3 * time.Minute

// Run runs the suite against runners made by newRunner, which is called
// once per subtest (and may fail or skip that subtest through its t).
//
// Run sets SecretEnv in the process environment for its duration, so it
// must not be called from a parallel test. Its subtests run in parallel.
func Run(t *testing.T, newRunner func(t *testing.T) builder.Runner, opts ...Option) {
	host := testenv.Registry(t)
	s := &suite{
		newRunner: newRunner,
		registry:  host,
		base:      testenv.Busybox(t, host),
		secret:    "buildgw-secret-" + randomHex(t, 16),
		hostname:  SandboxHostname,
	}
	for _, o := range opts {
		o(s)
	}
	// Every build of the suite runs with a secret in the runner's
	// environment, as a gateway does with its push credentials; the
	// Credentials subtest looks for it.
	t.Setenv(SecretEnv, s.secret)

	t.Run("Features", s.testFeatures)
	t.Run("Target", s.testTarget)
	t.Run("Output", s.testOutput)
	t.Run("CopyFromImage", s.testCopyFromImage)
	t.Run("FailingRun", s.testFailingRun)
	t.Run("Cancel", s.testCancel)
	t.Run("Credentials", s.testCredentials)
	t.Run("ReadOnlyContext", s.testReadOnlyContext)
	t.Run("Concurrent", s.testConcurrent)
	t.Run("Signals", s.testSignals)
	t.Run("IPC", s.testIPC)
	t.Run("Keyrings", s.testKeyrings)
	t.Run("OOMScore", s.testOOMScore)
}

// Option changes how the suite runs builds.
type Option func(*suite)

// WithBaseImages has p fetch every build's base images before the build
// starts, as jobs.Manager does with jobs.WithBaseImages.
func WithBaseImages(p builder.BasePreparer) Option {
	return func(s *suite) { s.preparer = p }
}

// WithOneUser tells the suite that the runner's sandbox has one user only
// (a user namespace that maps a single uid, as an unprivileged Pod
// allows), for the reason given. The Features case then checks that a
// RUN step as another user fails instead of running as that user.
func WithOneUser(reason string) Option {
	return func(s *suite) { s.oneUser = reason }
}

type suite struct {
	newRunner func(t *testing.T) builder.Runner
	preparer  builder.BasePreparer
	// outInside and hostPaths: see WithSandboxOutput and WithHostPaths.
	outInside string
	hostPaths []string
	hostname  string // see WithHostname
	oneUser   string // see WithOneUser
	registry  string // host:port, plain HTTP
	base      string // busybox on registry
	secret    string

	probeOnce sync.Once // builds probeBin, the sandbox probe, or fails with probeErr
	probeBin  string
	probeErr  error
}

// job is one build's input: the context's files (the Dockerfile among
// them) and the request's fields that are not paths.
type job struct {
	files      map[string]string
	dockerfile string // relative to the context; default "Dockerfile"
	args       map[string]string
	target     string
	labels     map[string]string
}

// setup is one build's workspace as the suite laid it out.
type setup struct {
	// parent holds the workspace and nothing else but what a case puts
	// there itself; it stands for "the rest of the host".
	parent string
	req    *builder.Request
}

// newSetup lays out a workspace like jobs.Manager does: the workspace
// (0700), the extracted context and the output directory, all handed to
// the sandbox user when the runner has one.
func (s *suite) newSetup(t *testing.T, r builder.Runner, j job) *setup {
	t.Helper()
	// Not t.TempDir: its parents are 0700, which a sandbox user other than
	// ours could not traverse, while a gateway's state directory is 0711.
	parent, err := os.MkdirTemp("", "buildgw-runnertest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeAll(r, parent); err != nil {
			t.Errorf("removing %s: %v", parent, err)
		}
	})
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	// A workspace on disk, made as jobs.Manager makes it.
	spaces, err := workspace.New(workspace.NewLayout(parent))
	if err != nil {
		t.Fatal(err)
	}
	id := "runnertest-" + randomHex(t, 8)
	ws, err := spaces.Create(id, archive.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(ws, "context")
	out := filepath.Join(ws, "out")
	for _, d := range []struct {
		p    string
		mode os.FileMode
	}{{ctxDir, 0o755}, {out, 0o700}} {
		if err := os.Mkdir(d.p, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	// What jobs.Manager hands over: the workspace, and the context and
	// output directories with everything in them.
	chown(t, r, ws, ctxDir, out)
	for name, body := range j.files {
		writeFile(t, r, ctxDir, name, body)
	}
	args := map[string]string{"BASE": s.base}
	for k, v := range j.args {
		args[k] = v
	}
	dockerfile := j.dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	st := &setup{
		parent: parent,
		req: &builder.Request{
			ID:                 id,
			Workspace:          ws,
			ContextDir:         ctxDir,
			Dockerfile:         dockerfile,
			BuildArgs:          args,
			Target:             j.target,
			Labels:             j.labels,
			OutputDir:          out,
			InsecureRegistries: []string{s.registry},
		},
	}
	if _, ok := j.files[dockerfile]; ok {
		s.prepare(t, st)
	}
	return st
}

// prepare fetches the base images of st's build, if the suite has a
// preparer. newSetup calls it when the job comes with its Dockerfile.
func (s *suite) prepare(t *testing.T, st *setup) {
	t.Helper()
	// As the Manager does on accepting a build; a Dockerfile it would
	// refuse reaches the runner without an analysis.
	st.req.Analysis, _ = df.Load(st.req.ContextDir, st.req.Dockerfile, st.req.BuildArgs, st.req.Target)
	if s.preparer == nil {
		return
	}
	b, err := s.preparer.Prepare(context.Background(), st.req, io.Discard)
	if err != nil {
		t.Fatalf("Prepare(%q): %v", st.req.Dockerfile, err)
	}
	st.req.BaseImages = b
}

// writeFile writes the context file name under ctxDir, with its
// directories, owned like the rest of the context.
func writeFile(t *testing.T, r builder.Runner, ctxDir, name, body string) {
	t.Helper()
	p := filepath.Join(ctxDir, filepath.FromSlash(name))
	var made []string
	for d := filepath.Dir(p); d != ctxDir; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	chown(t, r, append(made, p)...)
}

// chown hands paths to the runner's sandbox user, if it has one.
func chown(t *testing.T, r builder.Runner, paths ...string) {
	t.Helper()
	o, ok := r.(Owner)
	if !ok {
		return
	}
	uid, gid, differs := o.Owner()
	if !differs {
		return
	}
	for _, p := range paths {
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatalf("handing %s to the sandbox user: %v", p, err)
		}
	}
}

func removeAll(r builder.Runner, dir string) error {
	if rm, ok := r.(builder.Remover); ok {
		return rm.RemoveAll(context.Background(), dir)
	}
	return os.RemoveAll(dir)
}

// build runs one build to its end and returns its log. The log is shown
// if the test fails.
func build(t *testing.T, ctx context.Context, r builder.Runner, req *builder.Request) (v1.Image, *syncBuffer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, testenv.Scale(buildTimeout))
	defer cancel()
	log := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("build log of %s:\n%s", req.ID, log.String())
		}
	})
	img, err := r.Build(ctx, req, log)
	return img, log, err
}

// mustBuild is build for a build that must succeed.
func mustBuild(t *testing.T, r builder.Runner, req *builder.Request) (v1.Image, *syncBuffer) {
	t.Helper()
	img, log, err := build(t, context.Background(), r, req)
	if err != nil {
		t.Fatalf("Build(%q): %v", req.Dockerfile, err)
	}
	if img == nil {
		t.Fatalf("Build(%q) returned no image and no error", req.Dockerfile)
	}
	return img, log
}

// file is one entry of an image's flattened filesystem.
type file struct {
	typeflag byte
	body     string
	uid, gid int
}

// files reads img's filesystem as a container would see it: layers
// applied in order, whiteouts honoured. Keys are absolute paths.
func files(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	fsys := map[string]file{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fsys
		}
		if err != nil {
			t.Fatalf("reading the image's layers: %v", err)
		}
		f := file{typeflag: h.Typeflag, uid: h.Uid, gid: h.Gid}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("reading %s from the image: %v", h.Name, err)
			}
			f.body = string(b)
		}
		fsys[path.Clean("/"+h.Name)] = f
	}
}

// checkFiles checks that img holds want (path to content) as regular files
// and none of absent.
func checkFiles(t *testing.T, req *builder.Request, img v1.Image, want map[string]string, absent []string) map[string]file {
	t.Helper()
	fsys := files(t, img)
	for _, p := range sortedKeys(want) {
		f, ok := fsys[p]
		switch {
		case !ok:
			t.Errorf("Build(%q): file %s missing", req.Dockerfile, p)
		case f.typeflag != tar.TypeReg:
			t.Errorf("Build(%q): %s has type %q, want a regular file", req.Dockerfile, p, f.typeflag)
		case f.body != want[p]:
			t.Errorf("Build(%q): file %s = %q, want %q", req.Dockerfile, p, f.body, want[p])
		}
	}
	for _, p := range absent {
		if _, ok := fsys[p]; ok {
			t.Errorf("Build(%q): %s exists, want it absent", req.Dockerfile, p)
		}
	}
	return fsys
}

func configFile(t *testing.T, req *builder.Request, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("Build(%q): reading the image's config: %v", req.Dockerfile, err)
	}
	return cf
}

// checkWorkspace checks what the runner leaves behind when Build returns,
// whether the build succeeded, failed or was cancelled: nothing mounted
// under the workspace, and files the gateway can remove. Removing the
// workspace is the Manager's job, off the build's critical path, so
// leftover files are allowed; this removes them as the Manager would and
// checks that it works.
func checkWorkspace(t *testing.T, req *builder.Request) {
	t.Helper()
	ms, err := hostfs.Mounts(req.Workspace)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Errorf("Build(%q) left %s mounted", req.Dockerfile, m.Mountpoint)
	}
	ents, err := os.ReadDir(req.Workspace)
	if err != nil {
		t.Fatalf("reading the workspace: %v", err)
	}
	for _, e := range ents {
		p := filepath.Join(req.Workspace, e.Name())
		if p == req.ContextDir || p == req.OutputDir {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			t.Errorf("Build(%q) left %s, which cannot be removed: %v", req.Dockerfile, e.Name(), err)
		}
	}
}

func (s *suite) testFeatures(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	dockerfile, uidFile := featuresDockerfile, "/tmp/uid.txt"
	if s.oneUser != "" {
		t.Logf("the runner has one user (%s): a RUN step as another must fail", s.oneUser)
		dockerfile, uidFile = strings.Replace(dockerfile, "RUN id -u > /tmp/uid.txt\n", "", 1), ""
		other := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nUSER nobody\nRUN id -u > /tmp/uid.txt\n"}})
		if img, _, err := build(t, context.Background(), r, other.req); err == nil {
			t.Errorf("Build(USER nobody, RUN) = %v, nil; want an error from a runner with one user", img)
		}
	}
	st := s.newSetup(t, r, job{
		files: map[string]string{
			"docker/Dockerfile.features": dockerfile,
			"hello.txt":                  "hello from the context\n",
			"added.txt":                  "added\n",
			"bundle.tar":                 tarOf(t, map[string]string{"inner/one.txt": "from a tar\n"}),
		},
		// Not at the context's root, so the runner must resolve it
		// relative to the context.
		dockerfile: "docker/Dockerfile.features",
		args:       map[string]string{"GREETING": "hello-build-arg"},
		labels:     map[string]string{"org.buildgw.request": "from-request"},
	})
	req := st.req
	img, log := mustBuild(t, r, req)
	fsys := checkFiles(t, req, img, map[string]string{
		"/app/hello.txt":            "hello from the context\n",
		"/app/added.txt":            "added\n",
		"/app/bundle/inner/one.txt": "from a tar\n",
		"/app/dep.txt":              "dep-built\n",
		"/app/greeting.txt":         "hello-build-arg\n",
		"/app/run.txt":              "env=production pwd=/app\n",
		// The devices and /dev/shm that builds expect.
		"/app/dev.txt": "4\nshared\n",
	}, []string{
		// Only the first stage makes /out; the local tar is unpacked,
		// not copied.
		"/out/dep.txt", "/app/bundle.tar",
	})
	// COPY makes files root's whatever they belong to on the host; RUN
	// after USER writes as that user.
	owners := map[string][2]int{"/app/hello.txt": {0, 0}}
	if uidFile != "" {
		owners[uidFile] = [2]int{65534, 65534}
		if f := fsys[uidFile]; f.body != "65534\n" {
			t.Errorf("Build(%q): file %s = %q, want %q", req.Dockerfile, uidFile, f.body, "65534\n")
		}
	}
	for p, want := range owners {
		if f, ok := fsys[p]; ok && (f.uid != want[0] || f.gid != want[1]) {
			t.Errorf("Build(%q): %s owned by %d:%d, want %d:%d", req.Dockerfile, p, f.uid, f.gid, want[0], want[1])
		}
	}

	cf := configFile(t, req, img)
	c := cf.Config
	for _, e := range []string{"APP_ENV=production", "APP_HOME=/app"} {
		if !slices.Contains(c.Env, e) {
			t.Errorf("Build(%q): env = %q, want it to contain %q", req.Dockerfile, c.Env, e)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		t.Errorf("Build(%q): env = %q, want the base image's PATH kept", req.Dockerfile, c.Env)
	}
	if got, want := c.WorkingDir, "/app"; got != want {
		t.Errorf("Build(%q): workdir = %q, want %q", req.Dockerfile, got, want)
	}
	if got, want := c.User, "nobody"; got != want {
		t.Errorf("Build(%q): user = %q, want %q", req.Dockerfile, got, want)
	}
	if got, want := c.Entrypoint, []string{"/bin/sh", "-c"}; !slices.Equal(got, want) {
		t.Errorf("Build(%q): entrypoint = %q, want %q", req.Dockerfile, got, want)
	}
	if got, want := c.Cmd, []string{"echo hello"}; !slices.Equal(got, want) {
		t.Errorf("Build(%q): cmd = %q, want %q", req.Dockerfile, got, want)
	}
	for k, want := range map[string]string{"org.buildgw.dockerfile": "features", "org.buildgw.request": "from-request"} {
		if got := c.Labels[k]; got != want {
			t.Errorf("Build(%q): label %s = %q, want %q (labels %v)", req.Dockerfile, k, got, want, c.Labels)
		}
	}
	if cf.OS != "linux" {
		t.Errorf("Build(%q): os = %q, want linux", req.Dockerfile, cf.OS)
	}
	// The printf splits the marker so that only the command's output, not
	// a runner echoing the command, can match.
	if !strings.Contains(log.String(), "features-logged") {
		t.Errorf("Build(%q): log lacks the RUN step's output %q", req.Dockerfile, "features-logged")
	}
	checkWorkspace(t, req)
}

const featuresDockerfile = `ARG BASE
FROM ${BASE} AS deps
RUN mkdir -p /out && echo dep-built > /out/dep.txt

FROM ${BASE}
ARG GREETING=unset
ENV APP_ENV=production APP_HOME=/app
WORKDIR /app
COPY hello.txt ./hello.txt
ADD added.txt /app/added.txt
ADD bundle.tar /app/bundle/
COPY --from=deps /out/dep.txt /app/dep.txt
RUN printf '%s\n' "$GREETING" > greeting.txt && \
    printf 'env=%s pwd=%s\n' "$APP_ENV" "$(pwd)" > run.txt && \
    printf 'features-%s\n' logged
LABEL org.buildgw.dockerfile=features
RUN head -c 4 /dev/urandom | wc -c > /app/dev.txt && echo discarded > /dev/null && \
    echo shared > /dev/shm/x && cat /dev/shm/x >> /app/dev.txt
USER nobody
RUN id -u > /tmp/uid.txt
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
`

func (s *suite) testTarget(t *testing.T) {
	t.Parallel()
	const dockerfile = `ARG BASE
FROM ${BASE} AS first
RUN echo first > /first.txt

FROM first AS second
RUN echo second > /second.txt

FROM ${BASE}
RUN echo last > /last.txt
`
	for _, tc := range []struct {
		target string
		want   map[string]string
		absent []string
	}{
		{"first", map[string]string{"/first.txt": "first\n"}, []string{"/second.txt", "/last.txt"}},
		{"second", map[string]string{"/first.txt": "first\n", "/second.txt": "second\n"}, []string{"/last.txt"}},
		{"", map[string]string{"/last.txt": "last\n"}, []string{"/first.txt", "/second.txt"}},
	} {
		t.Run("target="+tc.target, func(t *testing.T) {
			t.Parallel()
			r := s.newRunner(t)
			st := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": dockerfile}, target: tc.target})
			img, _ := mustBuild(t, r, st.req)
			checkFiles(t, st.req, img, tc.want, tc.absent)
			checkWorkspace(t, st.req)
		})
	}
}

// testCopyFromImage copies a file out of an image that is no stage of the
// Dockerfile: the runner must get that image like a base image.
func (s *suite) testCopyFromImage(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	st := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": "FROM " + s.base + "\n" +
		"COPY --from=" + s.base + " /bin/busybox /copied/busybox\n" +
		"RUN test -x /copied/busybox && /copied/busybox echo copied-ok > /copied/ok.txt\n"}})
	img, _ := mustBuild(t, r, st.req)
	checkFiles(t, st.req, img, map[string]string{"/copied/ok.txt": "copied-ok\n"}, nil)
	checkWorkspace(t, st.req)
}

func (s *suite) testFailingRun(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	st := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": `ARG BASE
FROM ${BASE}
RUN printf 'marker-%s\n' xyz && exit 3
RUN echo not-reached > /not-reached
`}})
	img, log, err := build(t, context.Background(), r, st.req)
	if err == nil {
		t.Fatalf("Build(%q) = %v, nil; want an error for RUN exit 3", st.req.Dockerfile, img)
	}
	// The gateway shows the log, not the error, for what went wrong
	// inside the build: it must hold the failing command's output.
	if !strings.Contains(log.String(), "marker-xyz") {
		t.Errorf("Build(%q): log lacks the failing command's output %q", st.req.Dockerfile, "marker-xyz")
	}
	checkWorkspace(t, st.req)
}

func (s *suite) testCancel(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	// Durations unique to this run, so that the processes looked for
	// below are this build's and no other test's.
	n := 300000 + randomInt(t, 100000)
	fg, bg := fmt.Sprintf("sleep %d", n), fmt.Sprintf("sleep %d", n+1)
	// Besides the sleeps, a writer that keeps filling the build's root and
	// a sleep that no longer holds the build's output: a runner must not
	// count on either ending before it cleans up.
	st := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": fmt.Sprintf(`ARG BASE
FROM ${BASE}
RUN i=0; while :; do i=$((i+1)); mkdir -p /tmp/spam/$i; echo x > /tmp/spam/$i/f; done </dev/null >/dev/null 2>&1 & \
    %s </dev/null >/dev/null 2>&1 & \
    printf 'cancel-%%s\n' started; %s
`, bg, fg)}})
	req := st.req

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("build log of %s:\n%s", req.ID, log.String())
		}
	})
	type result struct {
		img v1.Image
		err error
	}
	done := make(chan result, 1)
	go func() {
		img, err := r.Build(ctx, req, log)
		done <- result{img, err}
	}()

	// Cancel only once the RUN step runs, so that there are processes of
	// the build's own to stop.
	deadline := time.After(testenv.Scale(buildTimeout))
	for !strings.Contains(log.String(), "cancel-started") {
		select {
		case res := <-done:
			t.Fatalf("Build(%q) = %v, %v before its RUN step started", req.Dockerfile, res.img, res.err)
		case <-deadline:
			cancel()
			<-done
			t.Fatalf("Build(%q): RUN step did not start within %s", req.Dockerfile, testenv.Scale(buildTimeout))
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The build is mid-RUN; make sure the sleeps are there to be killed,
	// or the check below proves nothing.
	if !poll(testenv.Scale(5*time.Second), func() bool { return len(processes(t, fg)) > 0 && len(processes(t, bg)) > 0 }) {
		t.Errorf("%q and %q not both running while the build runs: %q", fg, bg, processes(t, fg, bg))
	}
	cancelled := time.Now()
	cancel()
	select {
	case res := <-done:
		if res.err == nil {
			t.Errorf("Build(%q) after cancel = %v, nil; want an error", req.Dockerfile, res.img)
		}
		t.Logf("Build returned %v after %s", res.err, time.Since(cancelled).Round(time.Millisecond))
	case <-time.After(testenv.Scale(15 * time.Second)):
		t.Fatalf("Build(%q) still running %s after its context was cancelled", req.Dockerfile, testenv.Scale(15*time.Second))
	}

	// The kernel may reap the sandbox's processes a little after Build
	// returns; give it a moment, no more.
	if !poll(testenv.Scale(5*time.Second), func() bool { return len(processes(t, fg, bg)) == 0 }) {
		t.Errorf("processes of the cancelled build still running: %q", processes(t, fg, bg))
	}
	checkWorkspace(t, req)
}

// poll reports whether cond holds within d.
func poll(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// processes returns the command lines of the host's processes that
// contain any of subs.
func processes(t *testing.T, subs ...string) []string {
	t.Helper()
	ps, err := hostfs.Procs()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range ps {
		// A process may end while we look: that is not an error.
		cmdline := strings.Join(p.Args(), " ")
		for _, sub := range subs {
			if strings.Contains(cmdline, sub) {
				found = append(found, fmt.Sprintf("%d: %s", p.Pid, cmdline))
				break
			}
		}
	}
	return found
}

func (s *suite) testCredentials(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	// The secret, as a gateway might hold it on disk: in a file only root
	// may read, and in one anyone may, outside the workspace.
	dir, err := os.MkdirTemp("", "buildgw-runnertest-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	private, public := filepath.Join(dir, "private"), filepath.Join(dir, "public")
	for p, mode := range map[string]os.FileMode{private: 0o600, public: 0o644} {
		if err := os.WriteFile(p, []byte(s.secret+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	// /dev/shm is the host's own scratch space, shared by every process
	// that can reach it; a sandbox must not be one of them.
	shm := ""
	if f, err := os.CreateTemp("/dev/shm", "buildgw-runnertest-"); err == nil {
		shm = f.Name()
		t.Cleanup(func() { os.Remove(shm) })
		_, err := f.WriteString(s.secret + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(shm, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// The Dockerfile must not hold the secret itself, or the context, the
	// command lines and kaniko's own state would: the RUN step joins two
	// halves, and looks everywhere but in command lines. NULs become
	// newlines first: busybox grep matches line by line with strstr, so
	// it misses whatever follows a NUL (in an environ, all but the first
	// variable).
	half := len(s.secret) / 2
	var hostPaths []string
	for _, p := range []string{dir, private, public, shm} {
		if p != "" {
			hostPaths = append(hostPaths, p)
		}
	}
	dockerfile := fmt.Sprintf(`ARG BASE
FROM ${BASE}
RUN a=%q; b=%q; s="$a$b"; found=0; \
    has() { tr '\0' '\n' < "$1" 2>/dev/null | grep -qF "$s"; }; \
    printf 'A=1\0B=%%s\0' "$s" > /tmp/probe; \
    has /tmp/probe || { echo "the search cannot find the secret after a NUL"; found=1; }; \
    rm -f /tmp/probe; \
    for p in %s; do \
      if test -e "$p"; then echo "host path $p is visible"; found=1; fi; \
    done; \
    if env | grep -qF "$s"; then echo "secret in the environment"; found=1; fi; \
    for f in /proc/[0-9]*/environ /proc/self/environ; do \
      if has "$f"; then echo "secret in $f"; found=1; fi; \
    done; \
    list=$(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -type f -print 2>/dev/null; \
           find /dev/shm /dev/mqueue -type f 2>/dev/null); \
    for f in $list; do \
      if has "$f"; then echo "secret in file $f"; found=1; fi; \
    done; \
    n=$(echo "$list" | wc -l); printf 'searched %%s files\n' "$n"; \
    echo "$list" | grep -qx /etc/passwd || { echo "the search missed /etc/passwd"; found=1; }; \
    exit $found
`, s.secret[:half], s.secret[half:], strings.Join(hostPaths, " "))
	st := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": dockerfile}})
	img, log := mustBuild(t, r, st.req)
	if !strings.Contains(log.String(), "searched ") {
		t.Errorf("Build(%q): log lacks the search's report", st.req.Dockerfile)
	}
	// The image is what gets pushed: it must not carry the secret either.
	for p, f := range files(t, img) {
		if strings.Contains(f.body, s.secret) {
			t.Errorf("Build(%q): image file %s holds the secret", st.req.Dockerfile, p)
		}
	}
	if strings.Contains(log.String(), s.secret) {
		t.Errorf("Build(%q): log holds the secret", st.req.Dockerfile)
	}
	checkWorkspace(t, st.req)
}

func (s *suite) testReadOnlyContext(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	st := s.newSetup(t, r, job{files: map[string]string{
		"keep.txt":     "keep me\n",
		"sub/deep.txt": "deep\n",
	}})
	req := st.req
	// Something of the host's next to the workspace, which no build may
	// reach.
	outside := filepath.Join(st.parent, "outside.txt")
	if err := os.WriteFile(outside, []byte("outside\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outside, 0o666); err != nil {
		t.Fatal(err)
	}

	// Every way in a build might have to the context or the host: where
	// kaniko mounts the context, and the host's own paths. Each attempt
	// may fail (and say why in the log); the build goes on and the host is
	// checked afterwards.
	var script []string
	for _, d := range []string{"/workspace", req.ContextDir, req.Workspace, st.parent} {
		script = append(script,
			fmt.Sprintf("touch %s/x", d),
			fmt.Sprintf("echo tampered >> %s/keep.txt", d),
			fmt.Sprintf("echo tampered > %s/outside.txt", d),
			fmt.Sprintf("rm -rf %s/sub", d),
			fmt.Sprintf("chmod 777 %s/keep.txt", d),
			fmt.Sprintf("mkdir %s/newdir", d),
		)
	}
	// First, to make /workspace writable again: a remount of the mount
	// (bind) or of its filesystem. Docker's RUN steps may not mount at
	// all; a sandbox that let them could undo its own read-only bind, as
	// its root. What each attempt came to is kept in the image.
	remount := "{ mount -o remount,rw /workspace || mount -o remount,bind,rw /workspace; } && echo remounted > /remount || echo refused > /remount; " +
		"{ echo written > /workspace/probe && echo written || echo refused; } > /write"
	dockerfile := "ARG BASE\nFROM ${BASE}\nRUN " + remount + "; " + strings.Join(script, "; ") + "; true\n" +
		// The context is still what the build copies from.
		"COPY keep.txt /keep.txt\n"
	writeFile(t, r, req.ContextDir, "Dockerfile", dockerfile)
	s.prepare(t, st)
	before, parentBefore := tree(t, req.ContextDir), tree(t, st.parent, req.Workspace)

	img, _ := mustBuild(t, r, req)
	checkFiles(t, req, img, map[string]string{
		"/keep.txt": "keep me\n",
		"/remount":  "refused\n",
		"/write":    "refused\n",
	}, nil)

	if diff := diffTrees(before, tree(t, req.ContextDir)); diff != "" {
		t.Errorf("Build(%q) changed the context:\n%s", req.Dockerfile, diff)
	}
	if diff := diffTrees(parentBefore, tree(t, st.parent, req.Workspace)); diff != "" {
		t.Errorf("Build(%q) changed the host outside the workspace:\n%s", req.Dockerfile, diff)
	}
	checkWorkspace(t, req)
}

// tree describes everything under dir (but skip) by path: type, mode,
// owner, modification time and content, so that any change shows.
func tree(t *testing.T, dir string, skip ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if slices.Contains(skip, p) {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v mtime=%d", fi.Mode(), fi.ModTime().UnixNano())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			desc += fmt.Sprintf(" owner=%d:%d", st.Uid, st.Gid)
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" content=%q", b)
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return m
}

func diffTrees(before, after map[string]string) string {
	var lines []string
	for p, b := range before {
		switch a, ok := after[p]; {
		case !ok:
			lines = append(lines, fmt.Sprintf("  removed %s (%s)", p, b))
		case a != b:
			lines = append(lines, fmt.Sprintf("  changed %s: %s -> %s", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			lines = append(lines, fmt.Sprintf("  added %s (%s)", p, a))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (s *suite) testConcurrent(t *testing.T) {
	t.Parallel()
	// One runner for both, as the Manager shares one between its workers.
	r := s.newRunner(t)
	const dockerfile = `ARG BASE
FROM ${BASE}
ARG WHO
COPY who.txt /who-copied.txt
RUN echo "$WHO" > /who-run.txt && sleep 1
`
	names := []string{"alpha", "beta"}
	setups := make([]*setup, len(names))
	for i, n := range names {
		setups[i] = s.newSetup(t, r, job{
			files: map[string]string{"Dockerfile": dockerfile, "who.txt": n + " context\n"},
			args:  map[string]string{"WHO": n},
		})
	}
	var wg sync.WaitGroup
	imgs := make([]v1.Image, len(names))
	errs := make([]error, len(names))
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// t.Fatal may not be called from here; errors are checked below.
			imgs[i], _, errs[i] = build(t, context.Background(), r, setups[i].req)
		}()
	}
	wg.Wait()
	for i, n := range names {
		req := setups[i].req
		if errs[i] != nil {
			t.Errorf("Build(%q) for %s: %v", req.Dockerfile, n, errs[i])
			continue
		}
		checkFiles(t, req, imgs[i], map[string]string{
			"/who-copied.txt": n + " context\n",
			"/who-run.txt":    n + "\n",
		}, nil)
		checkWorkspace(t, req)
	}
}

// syncBuffer is a log that the runner may write from several goroutines
// while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tarOf returns an uncompressed tar of files, for ADD to unpack.
func tarOf(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range sortedKeys(files) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomInt(t testing.TB, n int64) int64 {
	t.Helper()
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return v.Int64()
}

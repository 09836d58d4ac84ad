package runnertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/testenv"
)

// WithSandboxOutput tells the suite where build steps see the output
// directory, if they see it at all (the kaniko runner's /kaniko/out), so
// that the Output cases plant their traps there. Default: nowhere but the
// output directory's host path, which no build should reach.
func WithSandboxOutput(p string) Option {
	return func(s *suite) { s.outInside = p }
}

// WithHostPaths adds host paths, such as the executor's, that no build
// step may learn from its processes' command lines or environments.
func WithHostPaths(paths ...string) Option {
	return func(s *suite) { s.hostPaths = append(s.hostPaths, paths...) }
}

// maxGatewayGrowth bounds how much the test process (the gateway) may
// grow while it reads one hostile build's output.
const maxGatewayGrowth = 1 << 30

// testOutput: build steps plant traps in the output directory for the
// gateway, which reads it as root on the host after the build. Each plant
// is a symbolic link index.json to a host path T that the sandbox itself
// lacks; the step makes T a harmless regular file inside the sandbox, so
// that kaniko writes and reads its index through the link there, while
// the gateway, resolving the link on the host, would reach what T is
// there: something that reads without end, a FIFO planted in the output
// directory, a root-only file. Each build must end in bounded time,
// failing or succeeding, without the host file's content in its error or
// log and without the gateway's memory growing; then a normal build on
// the same runner must succeed.
func (s *suite) testOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// host prepares the host side in parent (the suite's stand-in
		// for the host) and returns T.
		host func(t *testing.T, parent string, req *builder.Request) string
		// plant is shell run before the link is made, with $O the
		// output directory as the step sees it.
		plant string
	}{
		{
			name: "zero",
			host: func(t *testing.T, parent string, _ *builder.Request) string {
				p := filepath.Join(parent, "endless")
				if err := os.Symlink("/dev/zero", p); err != nil {
					t.Fatal(err)
				}
				return p
			},
			plant: `ln -sfn /dev/zero "$O/zero"; ln -sfn /dev/zero "$O/oci-layout"`,
		},
		{
			name: "fifo",
			host: func(t *testing.T, _ string, req *builder.Request) string {
				return filepath.Join(req.OutputDir, "fifo")
			},
			plant: `mkfifo "$O/fifo"`,
		},
		{
			name: "hostfile",
			host: func(t *testing.T, parent string, _ *builder.Request) string {
				p := filepath.Join(parent, "root-only.json")
				// Valid JSON holding the marker where a reader quotes
				// what it refuses: a reader that opens it leaks it.
				body := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":%q}]}`, s.secret)
				if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := s.newRunner(t)
			st := s.newSetup(t, r, job{})
			req := st.req
			target := tc.host(t, st.parent, req)
			outs := []string{req.OutputDir}
			if s.outInside != "" {
				outs = append(outs, s.outInside)
			}
			// The step starts in the background and from a session of
			// its own what a later step could not, and plants once more
			// at its end; every error is ignored, for a runner that
			// gives its steps no such directory.
			script := fmt.Sprintf(`for O in %s; do test -d "$O" || continue; %s; mkdir -p %q; echo '{}' > %q; ln -sfn %q "$O/index.json"; done 2>&1; true`,
				strings.Join(outs, " "), orTrue(tc.plant), filepath.Dir(target), target, target)
			writeFile(t, r, req.ContextDir, "Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN "+script+"\n")
			s.prepare(t, st)

			stop := watchMemory(t, maxGatewayGrowth)
			img, log, err := boundedBuild(t, r, req)
			stop()
			t.Logf("Build = %v", err)
			for what, text := range map[string]string{"error": fmt.Sprint(err), "log": log} {
				if strings.Contains(text, s.secret) {
					t.Errorf("Build(%s): the %s holds the root-only host file's content", tc.name, what)
				}
			}
			if err == nil {
				// Accepted only if what is pushed is a proper image.
				if _, derr := img.Digest(); derr != nil {
					t.Errorf("Build(%s) succeeded with an unreadable image: %v", tc.name, derr)
				} else {
					files(t, img)
				}
			}
			checkWorkspace(t, req)

			// The runner is still good for the next job.
			next := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN echo after > /after.txt\n"}})
			img, _ = mustBuild(t, r, next.req)
			checkFiles(t, next.req, img, map[string]string{"/after.txt": "after\n"}, nil)
		})
	}
	t.Run("procfs", s.testProcHostPaths)
}

func orTrue(sh string) string {
	if sh == "" {
		return "true"
	}
	return sh
}

// boundedBuild is build, failing the test if Build has not returned a
// little after the build's own timeout: a gateway stuck in a read of the
// build's output ignores its context.
func boundedBuild(t *testing.T, r builder.Runner, req *builder.Request) (v1.Image, string, error) {
	t.Helper()
	type result struct {
		img v1.Image
		log *syncBuffer
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(buildTimeout))
		defer cancel()
		log := &syncBuffer{}
		img, err := r.Build(ctx, req, log)
		done <- result{img, log, err}
	}()
	select {
	case res := <-done:
		if t.Failed() || res.err != nil {
			t.Logf("build log of %s:\n%s", req.ID, res.log.String())
		}
		return res.img, res.log.String(), res.err
	case <-time.After(testenv.Scale(buildTimeout + 30*time.Second)):
		t.Fatalf("Build(%q) has not returned %s after its context ended", req.Dockerfile, testenv.Scale(30*time.Second))
		return nil, "", nil
	}
}

// watchMemory aborts the test binary if its resident memory grows by more
// than limit before stop is called: a gateway reading without bound
// would otherwise take the machine down before the test could fail.
func watchMemory(t *testing.T, limit int64) (stop func()) {
	t.Helper()
	base := rss(t)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if n := rss(t); n-base > limit {
				panic(fmt.Sprintf("%s: the gateway's memory grew by %d MiB while it read the build's output", t.Name(), (n-base)>>20))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// rss returns the process's resident memory in bytes.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// testProcHostPaths: no process of a build shows a host path in its
// command line or environment. A build step that knows where its sandbox
// is on the host can aim links at it (see testOutput).
func (s *suite) testProcHostPaths(t *testing.T) {
	t.Parallel()
	r := s.newRunner(t)
	// Printed between two markers that the command itself does not hold
	// (printf joins them), NULs made newlines.
	script := `printf 'procdump-%s\n' begin; for f in /proc/1/cmdline /proc/1/environ /proc/self/cmdline /proc/self/environ /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do printf '%s: ' "$f"; tr '\0' ' ' < "$f" 2>/dev/null; echo; done; printf 'procdump-%s\n' end; printf 'mountinfo-%s\n' begin; cat /proc/self/mountinfo; printf 'mountinfo-%s\n' end`
	st := s.newSetup(t, r, job{files: map[string]string{"Dockerfile": "ARG BASE\nFROM ${BASE}\nRUN " + script + "\n"}})
	_, log := mustBuild(t, r, st.req)
	dump, ok := between(log.String(), "procdump-begin\n", "procdump-end\n")
	if !ok {
		t.Fatalf("Build(%q): log lacks the step's dump of /proc", st.req.Dockerfile)
	}
	if !strings.Contains(dump, "/proc/1/cmdline: ") {
		t.Fatalf("Build(%q): the dump lacks /proc/1/cmdline:\n%s", st.req.Dockerfile, dump)
	}
	for _, p := range append([]string{st.parent, st.req.Workspace}, s.hostPaths...) {
		for _, line := range strings.Split(dump, "\n") {
			if strings.Contains(line, p) {
				t.Errorf("Build(%q): a build step sees host path %s in %s", st.req.Dockerfile, p, line)
			}
		}
	}
	// The mounts' options (overlay's lowerdir and upperdir) name no host
	// path. Their roots may: a bind of a directory shows its path within
	// its file system, which is the host's path unless the workspace is a
	// file system of its own; that is logged, not asserted.
	mi, ok := between(log.String(), "mountinfo-begin\n", "mountinfo-end\n")
	if !ok {
		t.Fatalf("Build(%q): log lacks the step's mountinfo", st.req.Dockerfile)
	}
	t.Logf("mountinfo of a build step:\n%s", mi)
	for _, line := range strings.Split(mi, "\n") {
		_, opts, _ := strings.Cut(line, " - ")
		for _, p := range append([]string{st.parent, st.req.Workspace}, s.hostPaths...) {
			if strings.Contains(opts, p) {
				t.Errorf("Build(%q): a build step sees host path %s in the options of mount %s", st.req.Dockerfile, p, line)
			}
		}
	}
	checkWorkspace(t, st.req)
}

// between returns the text of s between begin and end.
func between(s, begin, end string) (string, bool) {
	_, after, ok := strings.Cut(s, begin)
	if !ok {
		return "", false
	}
	in, _, ok := strings.Cut(after, end)
	return in, ok
}

package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/workspace"
)

func TestEndToEnd(t *testing.T) {
	g := startGateway(t)
	tok := g.tokens["ci"]

	t.Run("features", func(t *testing.T) {
		ref1 := g.dest.Host + "/team/features:v1"
		ref2 := g.dest.Host + "/team/features:latest"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref1, "-t", ref2,
			"--build-arg", "BASE="+g.busybox, "--build-arg", "FLAVOR=spicy", "--label", "org.example.from=cli", "testdata/features")
		if code != 0 {
			t.Fatalf("submit = exit %d, want 0\nstderr:\n%s", code, stderr)
		}
		digest := lastLine(stdout)
		if !strings.HasPrefix(digest, "sha256:") {
			t.Fatalf("last stdout line = %q, want a digest", digest)
		}
		for _, ref := range []string{ref1, ref2} {
			img := g.pull(t, ref)
			d, _ := img.Digest()
			if d.String() != digest {
				t.Errorf("digest of %s = %s, want %s (the printed one)", ref, d, digest)
			}
		}
		img := g.pull(t, ref1)
		fs := files(t, img)
		wantFiles := map[string]string{
			"app/APP.txt":            "HELLO APP\n",
			"app/flavor.txt":         "flavor=spicy\n",
			"app/notes.txt":          "some notes\n",
			"app/dir/sub/nested.txt": "nested\n",
			"app/built.txt":          "built\n",
		}
		for p, want := range wantFiles {
			if got, ok := fs[p]; !ok || got.content != want {
				t.Errorf("file %s = %q (present %v), want %q", p, got.content, ok, want)
			}
		}
		if _, ok := fs["src/app.txt"]; ok {
			t.Errorf("file src/app.txt of the build stage is in the final image")
		}
		if h := fs["app/built.txt"].hdr; h == nil || h.Uid != 65534 || h.Gid != 65534 {
			t.Errorf("owner of app/built.txt = %v, want 65534:65534", h)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if got := strings.Join(c.Cmd, " "); got != "cat /app/APP.txt" {
			t.Errorf("cmd = %q, want %q", got, "cat /app/APP.txt")
		}
		if c.User != "65534:65534" {
			t.Errorf("user = %q, want 65534:65534", c.User)
		}
		if c.WorkingDir != "/app" {
			t.Errorf("workdir = %q, want /app", c.WorkingDir)
		}
		env := strings.Join(c.Env, "\n")
		for _, want := range []string{"APP_HOME=/app", "GREETING=hello world"} {
			if !strings.Contains(env, want) {
				t.Errorf("env = %q, want it to hold %q", c.Env, want)
			}
		}
		for k, want := range map[string]string{"org.example.stage": "release", "org.example.from": "cli"} {
			if c.Labels[k] != want {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
			}
		}
	})

	t.Run("target", func(t *testing.T) {
		ref := g.dest.Host + "/team/features:build-stage"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--target", "build", "--build-arg", "BASE="+g.busybox, "testdata/features")
		if code != 0 {
			t.Fatalf("submit --target build = exit %d, want 0\n%s", code, stderr)
		}
		fs := files(t, g.pull(t, ref+"@"+lastLine(stdout)))
		if got := fs["out/flavor.txt"].content; got != "flavor=plain\n" {
			t.Errorf("file out/flavor.txt = %q, want %q", got, "flavor=plain\n")
		}
		if _, ok := fs["app/APP.txt"]; ok {
			t.Errorf("file app/APP.txt of the release stage is in the build-stage image")
		}
	})

	t.Run("dockerignore", func(t *testing.T) {
		dir := copyDir(t, "testdata/ignore")
		// 20 MB that .dockerignore excludes: the upload must not carry it.
		if err := os.WriteFile(filepath.Join(dir, "big.bin"), make([]byte, 20<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		ref := g.dest.Host + "/team/ignore:1"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+g.busybox, dir)
		if code != 0 {
			t.Fatalf("submit = exit %d\n%s", code, stderr)
		}
		m := regexp.MustCompile(`accepted: (\d+) files, (\d+) bytes`).FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("build log lacks the accepted line:\n%s", firstLines(stderr, 3))
		}
		if n, _ := strconv.Atoi(m[2]); n >= 1<<20 {
			t.Errorf("accepted context bytes = %d, want < 1 MiB (big.bin is ignored)", n)
		}
		fs := files(t, g.pull(t, ref+"@"+lastLine(stdout)))
		for p, want := range map[string]bool{"ctx/keep.txt": true, "ctx/big.bin": false, "ctx/debug.log": false,
			"ctx/secrets/private.txt": false, "ctx/secrets/public.txt": true, "ctx/Dockerfile": true} {
			if _, ok := fs[p]; ok != want {
				t.Errorf("file %s present = %v, want %v", p, ok, want)
			}
		}
	})

	t.Run("credentials never reach the sandbox", func(t *testing.T) {
		pw := g.dest.Password
		half := len(pw) / 2
		ref := g.dest.Host + "/team/secrets:1"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+g.busybox,
			"--build-arg", "P1="+pw[:half], "--build-arg", "P2="+pw[half:], "testdata/secrets")
		if code != 0 {
			t.Fatalf("submit = exit %d, want 0 (the RUN step fails if it finds the push password)\n%s", code, stderr)
		}
		if !strings.Contains(stderr, "no credentials found") {
			t.Errorf("build log lacks the search's verdict:\n%s", stderr)
		}
		if !strings.HasPrefix(lastLine(stdout), "sha256:") {
			t.Errorf("last stdout line = %q, want a digest", lastLine(stdout))
		}
	})

	t.Run("private base image with sandbox pull credentials", func(t *testing.T) {
		// The base lives in the authenticated registry; only the read-only
		// puller account the config gives sandboxes can fetch it.
		img, err := baseimage.Busybox(testenv.BusyboxBinary(t))
		if err != nil {
			t.Fatal(err)
		}
		base, _ := name.NewTag(g.dest.Host + "/team/base/busybox:1")
		if err := remote.Write(base, img, remote.WithAuth(&authn.Basic{Username: g.dest.Username, Password: g.dest.Password}),
			remote.WithTransport(g.dest.HTTPClient().Transport)); err != nil {
			t.Fatalf("pushing private base: %v", err)
		}
		ref := g.dest.Host + "/team/private-base:1"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+base.String(), "testdata/simple")
		if code != 0 {
			t.Fatalf("submit FROM a private base = exit %d, want 0\n%s", code, tail(stderr, 8))
		}
		fs := files(t, g.pull(t, ref+"@"+lastLine(stdout)))
		if got := fs["r.txt"].content; got != "retried\n" {
			t.Errorf("file r.txt = %q, want %q", got, "retried\n")
		}
	})

	t.Run("dind runner", func(t *testing.T) {
		ref := g.dest.Host + "/team/features:dind"
		stdout, stderr, code := g.cli(t, tok, "submit", "--runner", "dind", "-t", ref,
			"--build-arg", "BASE="+g.busybox, "--build-arg", "FLAVOR=dind", "testdata/features")
		if code != 0 {
			t.Fatalf("submit --runner dind = exit %d, want 0\n%s", code, tail(stderr, 20))
		}
		// By default the job's daemon keeps its data on a tmpfs.
		if !regexp.MustCompile(`dind: job daemon ready in .*data root on a \d+ MiB tmpfs, network none`).MatchString(stderr) {
			t.Errorf("submit --runner dind log does not show a tmpfs data root and network none:\n%s", tail(stderr, 20))
		}
		// Its base comes from the gateway's store; the daemon never pulls.
		if !strings.Contains(stderr, "base images loaded in") || strings.Contains(stderr, "Pulling from") {
			t.Errorf("submit --runner dind log does not show the base loaded from the store:\n%s", tail(stderr, 20))
		}
		img := g.pull(t, ref+"@"+lastLine(stdout))
		fs := files(t, img)
		for p, want := range map[string]string{"app/APP.txt": "HELLO APP\n", "app/flavor.txt": "flavor=dind\n", "app/notes.txt": "some notes\n"} {
			if got := fs[p].content; got != want {
				t.Errorf("dind image: file %s = %q, want %q", p, got, want)
			}
		}
		cf, _ := img.ConfigFile()
		if cf.Config.User != "65534:65534" || cf.Config.WorkingDir != "/app" {
			t.Errorf("dind image: user %q workdir %q, want 65534:65534 and /app", cf.Config.User, cf.Config.WorkingDir)
		}
		// The job's daemon, containerd and shims all name the state
		// directory on their command lines.
		if n := countProcs(t, g.stateDir+"/"); n != 0 {
			t.Errorf("processes naming the state directory after the build = %d, want 0", n)
		}
		if left, _ := filepath.Glob(filepath.Join(g.stateDir, "*", "*", "dind")); len(left) > 0 {
			t.Errorf("dind state after the build = %v, want none", left)
		}
	})

	t.Run("dind runner, private base", func(t *testing.T) {
		// The base lives in the authenticated registry: the gateway
		// fetches it with the read-only puller account; the job's daemon
		// has no credential and no way to the registry.
		img, err := baseimage.Busybox(testenv.BusyboxBinary(t))
		if err != nil {
			t.Fatal(err)
		}
		base, _ := name.NewTag(g.dest.Host + "/team/base/busybox:dind")
		if err := remote.Write(base, img, remote.WithAuth(&authn.Basic{Username: g.dest.Username, Password: g.dest.Password}),
			remote.WithTransport(g.dest.HTTPClient().Transport)); err != nil {
			t.Fatalf("pushing private base: %v", err)
		}
		ref := g.dest.Host + "/team/private-base:dind"
		stdout, stderr, code := g.cli(t, tok, "submit", "--runner", "dind", "-t", ref, "--build-arg", "BASE="+base.String(), "testdata/simple")
		if code != 0 {
			t.Fatalf("submit --runner dind FROM a private base = exit %d, want 0\n%s", code, tail(stderr, 8))
		}
		fs := files(t, g.pull(t, ref+"@"+lastLine(stdout)))
		if got := fs["r.txt"].content; got != "retried\n" {
			t.Errorf("file r.txt = %q, want %q", got, "retried\n")
		}
	})

	t.Run("failing RUN", func(t *testing.T) {
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", g.dest.Host+"/team/fail:1", "--build-arg", "BASE="+g.busybox, "testdata/fail")
		if code == 0 {
			t.Fatalf("submit of a failing build = exit 0, want non-zero")
		}
		if strings.TrimSpace(stdout) != "" {
			t.Errorf("stdout = %q, want empty (no digest)", stdout)
		}
		if !strings.Contains(stderr, "marker-7f3a") {
			t.Errorf("stderr lacks the RUN step's output:\n%s", stderr)
		}
		if !strings.Contains(lastLine(stderr), "failed") {
			t.Errorf("last stderr line = %q, want it to say the build failed", lastLine(stderr))
		}
		builds := g.listBuilds(t, tok)
		if len(builds) == 0 || builds[0].Status != "failed" || builds[0].Error == "" {
			t.Errorf("newest build = %+v, want failed with an error", builds[0])
		}
	})

	t.Run("cancel", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(g.bin, "buildctl-lite"), "submit", "-t", g.dest.Host+"/team/sleep:1", "--build-arg", "BASE="+g.busybox, "testdata/sleep")
		cmd.Env = append(os.Environ(), "BUILDGW_URL="+g.url, "BUILDGW_TOKEN="+g.tokens["other"], "SSL_CERT_FILE="+g.caFile)
		out := &syncWriter{w: &strings.Builder{}}
		cmd.Stderr = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The log shows the RUN line before the step starts, so wait for its
		// processes themselves: its sleep 307 and sleep 308, numbers no
		// other test's build sleeps (those of packages tested meanwhile
		// must not count).
		sleeps := func() int { return countProcs(t, "sleep 307") + countProcs(t, "sleep 308") }
		deadline := time.Now().Add(testenv.Scale(60 * time.Second))
		for sleeps() < 2 {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("the build never reached its RUN step:\n%s", out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		id := g.listBuilds(t, g.tokens["other"])[0].ID
		// A gateway running as root keeps workspaces on its tmpfs
		// (workspaces: auto), the job root with the unpacked base too.
		var st unix.Statfs_t
		root := filepath.Join(workspace.NewLayout(g.stateDir).Mem, id, "root")
		if err := unix.Statfs(root, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Errorf("statfs(%s) = type %#x, %v; want a tmpfs", root, st.Type, err)
		}
		stdout, stderr, code := g.cli(t, g.tokens["other"], "cancel", id)
		if code != 0 || strings.TrimSpace(stdout) != "cancelled" {
			t.Errorf("cancel = %q, exit %d (%s), want cancelled, 0", stdout, code, stderr)
		}
		err := cmd.Wait()
		if err == nil {
			t.Errorf("submit of a cancelled build = exit 0, want non-zero")
		}
		waitFor(t, 10*time.Second, "sleep processes to die", func() bool { return sleeps() == 0 })
		g.waitNoWorkspaces(t)
		stdout, _, _ = g.cli(t, g.tokens["other"], "status", id)
		if !strings.Contains(stdout, `"status": "cancelled"`) {
			t.Errorf("status = %s, want cancelled", stdout)
		}
	})

	t.Run("uid mapping on a debian minbase", func(t *testing.T) {
		root := testenv.Minbase(t)
		img, err := baseimage.FromDir(root, []string{"bash"})
		if err != nil {
			t.Fatal(err)
		}
		base, _ := name.NewTag(g.base.Host+"/library/debian:bookworm-minbase", name.Insecure)
		if err := remote.Write(base, img, remote.WithAuth(authn.Anonymous)); err != nil {
			t.Fatalf("pushing minbase: %v", err)
		}
		ref := g.dest.Host + "/team/minbase:1"
		stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+base.String(), "testdata/minbase")
		if code != 0 {
			t.Fatalf("submit = exit %d\n%s", code, tail(stderr, 30))
		}
		if !strings.Contains(stderr, "root:shadow") {
			t.Errorf("build log lacks root:shadow for /etc/gshadow:\n%s", tail(stderr, 20))
		}
		pulled := g.pull(t, ref+"@"+lastLine(stdout))
		fs := files(t, pulled)
		if h := fs["etc/gshadow"].hdr; h == nil || h.Gid != 42 {
			t.Errorf("group of etc/gshadow = %v, want 42 (shadow)", h)
		}
		if h := fs["srv/data/owned.txt"].hdr; h == nil || h.Uid != 4242 || h.Gid != 4242 {
			t.Errorf("owner of srv/data/owned.txt = %v, want 4242:4242", h)
		}
		cf, _ := pulled.ConfigFile()
		if cf.Config.User != "builder" {
			t.Errorf("user = %q, want builder", cf.Config.User)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		get := func(token string) (int, string) {
			code, b := g.do(t, http.MethodGet, "/metrics", token, "", nil)
			return code, string(b)
		}
		// One build of its own, so the counters have something to count
		// whichever subtests ran before.
		if _, _, code := g.cli(t, tok, "submit", "-q", "-t", g.dest.Host+"/team/fail:m", "--build-arg", "BASE="+g.busybox, "testdata/fail"); code == 0 {
			t.Fatalf("failing build = exit 0")
		}
		if code, _ := get(""); code != http.StatusUnauthorized {
			t.Errorf("GET /metrics without token = %d, want 401", code)
		}
		code, body := get(tok)
		if code != http.StatusOK {
			t.Fatalf("GET /metrics = %d, want 200", code)
		}
		for _, want := range []string{
			`(?m)^buildgw_builds_finished_total\{runner="kaniko",status="failed"\} [1-9]`,
			`(?m)^buildgw_builds_accepted_total\{runner="kaniko"\} [1-9]`,
			`(?m)^buildgw_auth_failures_total [1-9]`,
			`(?m)^buildgw_queue_depth 0$`,
			`(?m)^buildgw_builds_running 0$`,
			`(?m)^buildgw_build_duration_seconds_count\{runner="kaniko",status="failed"\} [1-9]`,
			`(?m)^buildgw_context_bytes_total [1-9]`,
			`(?m)^buildgw_upload_bytes_total [1-9]`,
			// The test gateway runs as root: workspaces in memory.
			`(?m)^buildgw_workspaces_total\{place="memory"\} [1-9]`,
			`(?m)^buildgw_workspaces_total\{place="disk"\} 0$`,
			`(?m)^buildgw_workspace_memory_bytes [1-9]`,
			`(?m)^buildgw_workspace_memory_free_bytes [1-9]`,
		} {
			if !regexp.MustCompile(want).MatchString(body) {
				t.Errorf("GET /metrics lacks a line matching %s", want)
			}
		}
	})

	g.waitNoWorkspaces(t)
}

func countProcs(t *testing.T, needle string) int {
	t.Helper()
	ps, err := hostfs.Procs()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range ps {
		if strings.Contains(strings.Join(p.Args(), " "), needle) {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v %s", src, err, out)
	}
	return dst
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

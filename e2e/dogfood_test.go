package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/baseimage"
	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/runners/dind"
)

// runtimePackages are what the Dockerfile's runtime stage installs; the
// test's Debian base has them already, so that stage needs no network.
var runtimePackages = []string{"uidmap", "ca-certificates", "libcap2-bin"}

// dockerRunOptions are the options examples/deploy/README.md documents for
// running the image, exactly: no capability but the two the uidmap helpers
// use, Docker's seccomp profile plus the calls a sandbox makes, and a /proc
// without masked paths (the kernel refuses a fresh proc mount in a user
// namespace while parts of /proc are covered). The profile path is
// relative to the repository.
var dockerRunOptions = []string{
	"--cap-drop=ALL", "--cap-add=SETUID", "--cap-add=SETGID",
	"--security-opt", "seccomp=examples/deploy/seccomp.json",
	"--security-opt", "systempaths=unconfined",
	"--network=host",
}

const (
	dogfoodVersion = "v0.0.0-dogfood"
	dogfoodCommit  = "0123456789abcdef0123456789abcdef01234567"
	imageUID       = "10001"
)

// TestDogfood builds the gateway's own image with the gateway, from the
// repository as it is, on base images made here (a debootstrap minbase,
// and a Go image made of this machine's Go installation); checks the
// image; then runs it with the local Docker engine, with the documented
// options, and builds through the gateway inside it.
func TestDogfood(t *testing.T) {
	g := startGatewayWith(t, gatewayOptions{
		jobTimeout:      40 * time.Minute,
		maxContextBytes: 1 << 30,
		maxContextFiles: 100000,
		// One build at a time, so that this one gets the whole memory
		// for workspaces: compiling the gateway with its vendored
		// dependencies (Kubernetes' client among them) on the Go base
		// needs more than half of it.
		config: func(_ *gateway, c *buildgw.Config) { c.Concurrency = 1 },
	})
	root := testenv.MinbaseWith(t, runtimePackages...)
	debian, err := baseimage.FromDir(root, []string{"bash"})
	if err != nil {
		t.Fatal(err)
	}
	runtimeRef := pushBase(t, g.base.Host+"/library/debian:bookworm-slim", debian)
	goRef := pushBase(t, g.base.Host+"/library/golang:bookworm", goImage(t, debian))

	stage := stageRepository(t)
	dest := g.dest.Host + "/team/buildgw:dogfood"
	start := time.Now()
	stdout, stderr, code := runCLI(t, g, 40*time.Minute, "submit",
		"--build-arg", "GO_IMAGE="+goRef,
		"--build-arg", "RUNTIME_IMAGE="+runtimeRef,
		"--build-arg", "VERSION="+dogfoodVersion,
		"--build-arg", "COMMIT="+dogfoodCommit,
		"-t", dest, stage)
	if code != 0 {
		t.Fatalf("submit exited %d\nstderr:\n%s", code, tailLines(stderr, 60))
	}
	t.Logf("dogfood build: %s", time.Since(start).Round(time.Second))
	img := g.pull(t, dest+"@"+lastLine(stdout))

	checkGatewayImage(t, img)
	runGatewayImage(t, g, img)
}

// checkGatewayImage checks the image's configuration, its files and that
// its binaries run and report the stamped version.
func checkGatewayImage(t *testing.T, img v1.Image) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if want := imageUID + ":" + imageUID; c.User != want {
		t.Errorf("user = %q, want %q (non-root)", c.User, want)
	}
	if got := strings.Join(c.Entrypoint, " "); got != "/usr/local/bin/buildgw" {
		t.Errorf("entrypoint = %q, want /usr/local/bin/buildgw", got)
	}
	labels := map[string]string{
		"org.opencontainers.image.version":  dogfoodVersion,
		"org.opencontainers.image.revision": dogfoodCommit,
		"org.opencontainers.image.title":    "buildgw",
		"org.opencontainers.image.source":   "https://github.com/buildgw/buildgw",
	}
	for k, want := range labels {
		if got := c.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	bins := []string{"usr/local/bin/buildgw", "usr/local/bin/buildctl-lite", "usr/local/bin/kaniko-executor"}
	hdrs, dir := extract(t, img, bins...)
	for _, b := range bins {
		h := hdrs[b]
		if h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 || h.Uid != 0 {
			t.Errorf("%s = %+v, want a root-owned executable file", b, h)
		}
	}
	for _, p := range []string{"usr/bin/newuidmap", "usr/bin/newgidmap"} {
		h := hdrs[p]
		if h == nil {
			t.Errorf("%s missing", p)
			continue
		}
		if h.Mode&0o4000 != 0 {
			t.Errorf("%s is setuid; want file capabilities instead", p)
		}
		if h.PAXRecords["SCHILY.xattr.security.capability"] == "" {
			t.Errorf("%s has no security.capability", p)
		}
	}
	for p, want := range map[string]string{
		"etc/subuid": "buildgw:100000:65536\n",
		"etc/subgid": "buildgw:100000:65536\n",
	} {
		if got := string(readExtracted(t, dir, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if h := hdrs["var/lib/buildgw"]; h == nil || fmt.Sprint(h.Uid) != imageUID || h.Mode&0o777 != 0o711 {
		t.Errorf("var/lib/buildgw = %+v, want owned by %s, mode 0711", h, imageUID)
	}

	// The binaries are static: they run here as they are.
	versions := map[string][]string{
		"buildgw":         {"buildgw " + dogfoodVersion, dogfoodCommit, "kaniko v1.24.0"},
		"buildctl-lite":   {dogfoodVersion, dogfoodCommit},
		"kaniko-executor": {"v1.24.0"},
	}
	for b, wants := range versions {
		out, err := exec.Command(filepath.Join(dir, "usr/local/bin", b), "version").CombinedOutput()
		if err != nil {
			t.Errorf("%s version: %v\n%s", b, err, out)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s version = %q, want it to contain %q", b, out, w)
			}
		}
	}
}

// runGatewayImage runs the image in a Docker engine of its own with the
// documented options and builds a small Dockerfile through the gateway
// inside it, pushing to the test's authenticated registry. Then it checks
// that each of those options is needed: without it, builds fail.
func runGatewayImage(t *testing.T, g *gateway, img v1.Image) {
	t.Helper()
	docker := startDocker(t)
	tarPath := filepath.Join(t.TempDir(), "image.tar")
	tag, _ := name.NewTag("buildgw-dogfood:test")
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		t.Fatal(err)
	}
	docker.run(t, "load", "-i", tarPath)

	ctxDir := t.TempDir()
	dockerfile := "ARG BASE\nFROM ${BASE}\nCOPY msg.txt /msg.txt\nRUN id -u > /uid.txt && cat /msg.txt > /inside.txt\nUSER nobody\n"
	for n, c := range map[string]string{"Dockerfile": dockerfile, "msg.txt": "built inside the gateway image\n"} {
		if err := os.WriteFile(filepath.Join(ctxDir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	c := startContainer(t, g, docker, "buildgw-dogfood", tag.String(), dockerRunOptions)
	if got := strings.TrimSpace(docker.run(t, "exec", c.name, "id", "-u")); got != imageUID {
		t.Errorf("gateway in the container runs as uid %s, want %s", got, imageUID)
	}
	ref := g.dest.Host + "/team/inside:1"
	start := time.Now()
	stdout, stderr, code := runCLIAt(t, g, c.url, c.token, 5*time.Minute, "submit", "--build-arg", "BASE="+g.busybox, "-t", ref, ctxDir)
	if code != 0 {
		t.Fatalf("submit to the gateway in the container exited %d\nstderr:\n%s", code, tailLines(stderr, 40))
	}
	t.Logf("build through the gateway in the container: %s, %s", time.Since(start).Round(time.Millisecond), lastLine(stdout))
	built := g.pull(t, ref+"@"+lastLine(stdout))
	fsys := files(t, built)
	for p, want := range map[string]string{"inside.txt": "built inside the gateway image\n", "uid.txt": "0\n"} {
		if got := fsys[p].content; got != want {
			t.Errorf("%s in the image built inside = %q, want %q", p, got, want)
		}
	}
	if cf, err := built.ConfigFile(); err != nil || cf.Config.User != "nobody" {
		t.Errorf("user of the image built inside = %v (%v), want nobody", cf, err)
	}

	// The container cannot mount a tmpfs; given one at state_dir/mem, as
	// examples/deploy documents, it keeps its workspaces there.
	mem := startContainer(t, g, docker, "buildgw-dogfood-mem", tag.String(),
		append(slices.Clone(dockerRunOptions), "--tmpfs", "/var/lib/buildgw/mem:exec,size=512m,mode=0711,uid="+imageUID+",gid="+imageUID))
	stdout, stderr, code = runCLIAt(t, g, mem.url, mem.token, 5*time.Minute, "submit", "--build-arg", "BASE="+g.busybox, "-t", g.dest.Host+"/team/inside-mem:1", ctxDir)
	if code != 0 {
		t.Fatalf("submit to the gateway in the container with a tmpfs exited %d\nstderr:\n%s", code, tailLines(stderr, 40))
	}
	if got := files(t, g.pull(t, g.dest.Host+"/team/inside-mem:1@"+lastLine(stdout)))["inside.txt"].content; got != "built inside the gateway image\n" {
		t.Errorf("inside.txt in the image built in memory = %q, want the context's msg.txt", got)
	}
	if logs, err := docker.command("logs", mem.name).CombinedOutput(); err != nil || !strings.Contains(string(logs), "memory, the tmpfs of 512 MiB mounted at state_dir/mem") {
		t.Errorf("log of the gateway given a tmpfs (%v) does not say its workspaces are in it:\n%s", err, tailLines(string(logs), 20))
	}

	// Least privilege: without any one of the options, builds fail (with
	// the sandbox's own error in the build log).
	without := []struct {
		name, wantLog string
		drop          []string
	}{
		{"setuid-setgid", "newuidmap", []string{"--cap-add=SETUID", "--cap-add=SETGID"}},
		{"seccomp-profile", "unshare", []string{"--security-opt", "seccomp=examples/deploy/seccomp.json"}},
		{"systempaths", "mounting proc", []string{"--security-opt", "systempaths=unconfined"}},
	}
	for _, w := range without {
		var opts []string
		for i := 0; i < len(dockerRunOptions); i++ {
			o := dockerRunOptions[i]
			if o == "--security-opt" {
				i++
				if v := dockerRunOptions[i]; !slices.Contains(w.drop, v) {
					opts = append(opts, o, v)
				}
				continue
			}
			if !slices.Contains(w.drop, o) {
				opts = append(opts, o)
			}
		}
		c := startContainer(t, g, docker, "buildgw-without-"+w.name, tag.String(), opts)
		_, stderr, code := runCLIAt(t, g, c.url, c.token, 2*time.Minute, "submit", "--build-arg", "BASE="+g.busybox, "-t", g.dest.Host+"/team/without:"+w.name, ctxDir)
		if code == 0 {
			t.Errorf("without %v a build succeeded; the option is not needed", w.drop)
		} else if !strings.Contains(stderr, w.wantLog) {
			t.Errorf("without %v the build failed, but its log does not mention %q:\n%s", w.drop, w.wantLog, tailLines(stderr, 10))
		} else {
			t.Logf("without %v: %s", w.drop, lastLine(stderr))
		}
	}
}

// container is a gateway running in the image.
type container struct {
	name, url, token string
}

// startContainer runs the image as a gateway on a free loopback port with
// the docker run options opts (the seccomp profile's path relative to the
// repository), pushing to the test's destination registry and pulling from
// its base registry, and waits until it is healthy.
func startContainer(t *testing.T, g *gateway, docker *dockerEngine, cname, image string, opts []string) *container {
	t.Helper()
	// Configuration, readable by the image's user.
	cfgDir := filepath.Join(testenv.StateDir(t), "etc")
	if err := os.Mkdir(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &container{name: cname, token: "inside-" + fmt.Sprint(time.Now().UnixNano())}
	listen := testenv.FreeAddr(t)
	c.url = "http://" + listen
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(cfgDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(g.dest.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	write("registry-ca.pem", string(ca))
	write("registry-password", g.dest.Password+"\n")
	writeYAML := func(name string, v any) {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		write(name, string(b))
	}
	writeYAML("policy.yaml", testgateway.Policy{Rules: []testgateway.Rule{{
		Name:  "ci",
		Match: map[string]string{"kind": "token"},
		Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/team/**"}, From: []string{g.base.Host}},
	}}})
	// Paths as the container sees them.
	cfg := buildgw.DefaultConfig()
	cfg.Listen = listen
	cfg.StateDir = "/var/lib/buildgw"
	cfg.Concurrency = 1
	cfg.JobTimeout = buildgw.Duration(5 * time.Minute)
	cfg.Tokens = []buildgw.Token{{Name: "ci", SHA256: token.HashToken(c.token)}}
	cfg.Registries = map[string]buildgw.Registry{
		g.dest.Host: {Username: g.dest.Username, PasswordFile: "/etc/buildgw/registry-password", CAFile: "/etc/buildgw/registry-ca.pem"},
		g.base.Host: {Insecure: true},
	}
	cfg.PolicyFile = "/etc/buildgw/policy.yaml"
	cfg.Audit.Stdout = true
	writeYAML("buildgw.yaml", cfg)

	args := []string{"run", "-d", "--name", cname}
	for _, o := range opts {
		if p, ok := strings.CutPrefix(o, "seccomp="); ok {
			o = "seccomp=" + filepath.Join(testenv.ModuleRoot(t), p)
		}
		args = append(args, o)
	}
	args = append(args, "-v", cfgDir+":/etc/buildgw:ro", image)
	docker.run(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			out, err := docker.command("logs", cname).CombinedOutput()
			t.Logf("container %s log (%v):\n%s", cname, err, tailLines(string(out), 80))
		}
		docker.command("rm", "-f", cname).Run()
	})
	waitHealthy(t, c.url, 30*time.Second)
	return c
}

func pushBase(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

// goImage returns base with this machine's Go installation added at
// /usr/local/go, as the official golang images have it.
func goImage(t *testing.T, base v1.Image) v1.Image {
	t.Helper()
	goroot := runtime.GOROOT()
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		goroot = strings.TrimSpace(string(out))
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeGoroot(pw, goroot)) }()
		return pr, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Env = []string{"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeGoroot writes the toolchain under usr/local/go, without what a
// build never reads (the toolchain's own tests).
func writeGoroot(w io.Writer, goroot string) error {
	tw := tar.NewWriter(w)
	for _, d := range []string{"usr/", "usr/local/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}); err != nil {
			return err
		}
	}
	err := filepath.WalkDir(goroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(goroot, p)
		if rel == "test" || d.Name() == "testdata" && d.IsDir() {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, "_test.go") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(filepath.Join("usr/local/go", rel))
		if d.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// stageRepository copies the repository's files (tracked, and new ones
// not ignored) into a directory and vendors the modules there, so that the
// image builds without network.
func stageRepository(t *testing.T) string {
	t.Helper()
	root := testenv.ModuleRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	stage := filepath.Join(t.TempDir(), "buildgw")
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, rel)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		dst := filepath.Join(stage, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "mod", "vendor")
	cmd.Dir = stage
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, b)
	}
	return stage
}

// extract writes the image's files named in want (paths without a leading
// slash) into a new directory and returns every entry's header, by path
// without leading or trailing slash.
func extract(t *testing.T, img v1.Image, want ...string) (map[string]*tar.Header, string) {
	t.Helper()
	dir := t.TempDir()
	keep := map[string]bool{"etc/subuid": true, "etc/subgid": true}
	for _, w := range want {
		keep[w] = true
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	hdrs := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, dir
		}
		if err != nil {
			t.Fatal(err)
		}
		n := strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")
		hdrs[n] = h
		if !keep[n] || h.Typeflag != tar.TypeReg {
			continue
		}
		dst := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func readExtracted(t *testing.T, dir, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, p))
	if err != nil {
		t.Errorf("reading %s of the image: %v", p, err)
	}
	return b
}

// runCLI runs buildctl-lite against the test's gateway with a timeout.
func runCLI(t *testing.T, g *gateway, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	return runCLIAt(t, g, g.url, g.tokens["ci"], timeout, args...)
}

func runCLIAt(t *testing.T, g *gateway, url, tok string, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(g.bin, "buildctl-lite"), args...)
	cmd.Env = append(os.Environ(), "BUILDGW_URL="+url, "BUILDGW_TOKEN="+tok, "SSL_CERT_FILE="+g.caFile)
	return runOut(t, cmd)
}

func waitHealthy(t *testing.T, url string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway at %s not healthy after %s: %v", url, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dockerEngine is a dockerd of the test's own (no bridge, no iptables)
// and the docker CLI pointed at it.
type dockerEngine struct {
	socket, config string
}

func startDocker(t *testing.T) *dockerEngine {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("docker CLI not found: run scripts/setup --test (it installs docker.io)")
	}
	r, err := dind.New()
	if err != nil {
		t.Fatalf("dind.New: %v", err)
	}
	d, err := r.StartDaemon(context.Background(), filepath.Join(testenv.StateDir(t), "dockerd"), dind.DaemonConfig{Tag: "dogfood", Network: dind.NetworkHost})
	if err != nil {
		t.Fatalf("starting dockerd: %v", err)
	}
	e := &dockerEngine{socket: d.Socket(), config: t.TempDir()}
	// Registered before the container's removal, so it runs after it.
	t.Cleanup(func() { d.Stop() })
	return e
}

func (e *dockerEngine) command(args ...string) *exec.Cmd {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+e.socket, "DOCKER_CONFIG="+e.config)
	return cmd
}

func (e *dockerEngine) run(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := e.command(args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestDockerRunOptionsDocumented keeps the options TestDogfood runs the
// image with and those examples/deploy/README.md documents the same.
func TestDockerRunOptionsDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "examples", "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(dockerRunOptions); i++ {
		o := dockerRunOptions[i]
		if o == "--security-opt" {
			i++
			o += " " + dockerRunOptions[i]
		}
		if !bytes.Contains(readme, []byte(o)) {
			t.Errorf("examples/deploy/README.md does not document %q", o)
		}
	}
}

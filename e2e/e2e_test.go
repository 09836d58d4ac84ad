// Package e2e runs the real binaries end to end: buildgw serving TLS with a
// config file, buildctl-lite submitting contexts, the rootless kaniko
// runner, Debian's docker-registry with htpasswd and TLS as the push
// destination, and a second, open docker-registry holding base images.
// Every pushed image is pulled back and inspected.
package e2e

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth/token"
	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/buildgw/buildgw/workspace"
)

// gateway is a running buildgw and the registries around it.
type gateway struct {
	bin      string // directory holding buildgw and buildctl-lite
	url      string
	caFile   string // trusted for the gateway's TLS
	tokens   map[string]string
	stateDir string
	base     *testenv.DockerRegistry // open; holds base images
	dest     *testenv.DockerRegistry // htpasswd + TLS; receives pushes
	busybox  string
	// auditFile is the gateway's audit log.
	auditFile string
	gw        *testgateway.Gateway
	// proc is the gateway process (gw.Cmd), replaced when a test restarts
	// it (launch); exited is closed when it has exited.
	proc   *exec.Cmd
	exited <-chan struct{}
}

func binDir(t *testing.T) string {
	if d := os.Getenv("BUILDGW_BIN"); d != "" {
		return d
	}
	testenv.Build(t, "./cmd/buildgw", "buildgw")
	return filepath.Dir(testenv.Build(t, "./cmd/buildctl-lite", "buildctl-lite"))
}

func startGateway(t *testing.T) *gateway { return startGatewayWith(t, gatewayOptions{}) }

// startGatewayTLS starts a gateway; without TLS it serves plain HTTP on
// loopback, as dev mode does, so a test can see the HTTP in between.
func startGatewayTLS(t *testing.T, withTLS bool) *gateway {
	return startGatewayWith(t, gatewayOptions{plainHTTP: !withTLS})
}

// gatewayOptions vary the gateway a test gets.
type gatewayOptions struct {
	plainHTTP bool
	// config changes the configuration (more identities, say).
	config func(g *gateway, c *buildgw.Config)
	// policy replaces the default policy, which lets the static tokens
	// push to DEST/team/** from the base registry and DEST.
	policy func(g *gateway) testgateway.Policy
	// policyFile, when set, is the text of the policy file instead: a
	// real policy such as the example's, with the test's hosts.
	policyFile func(g *gateway) []byte
	// jobTimeout, maxContextBytes and maxContextFiles replace the
	// defaults (5m, 64 MiB, 2000 files) when set.
	jobTimeout                       time.Duration
	maxContextBytes, maxContextFiles int64
	// shutdownGrace replaces the default 2s when set.
	shutdownGrace time.Duration
}

// startGatewayWith starts the real buildgw (testgateway, binary mode) with
// a policy and an audit file, between an open base registry and an
// authenticated destination registry, and waits until it is healthy.
func startGatewayWith(t *testing.T, o gatewayOptions) *gateway {
	t.Helper()
	withTLS := !o.plainHTTP
	testenv.RequireSandbox(t)
	g := &gateway{bin: binDir(t), tokens: map[string]string{}}
	exe := testenv.Executor(t)
	g.base = testenv.StartDockerRegistry(t, false)
	g.dest = testenv.StartDockerRegistry(t, true)
	g.busybox = testenv.Busybox(t, g.base.Host)
	// The sandbox user must be able to traverse to its workspace.
	g.stateDir = filepath.Join(testenv.StateDir(t), "state")
	t.Cleanup(func() {
		// A gateway killed with builds queued leaves the workspaces'
		// tmpfs mounted for the next start.
		unix.Unmount(workspace.NewLayout(g.stateDir).Mem, unix.MNT_DETACH)
	})
	tlsDir := t.TempDir()
	cert, key, ca := testenv.SelfSigned(t, tlsDir)
	g.caFile = ca

	cfg := buildgw.DefaultConfig()
	for _, n := range []string{"ci", "retry", "other"} {
		tok := n + "-" + fmt.Sprint(time.Now().UnixNano())
		g.tokens[n] = tok
		cfg.Tokens = append(cfg.Tokens, buildgw.Token{Name: n, SHA256: token.HashToken(tok)})
	}
	// Known before the gateway starts, for audiences that name it.
	cfg.Listen = testenv.FreeAddr(t)
	g.url = "https://" + cfg.Listen
	if withTLS {
		cfg.TLS = buildgw.TLS{CertFile: cert, KeyFile: key}
	} else {
		g.url = "http://" + cfg.Listen
	}
	cfg.StateDir = g.stateDir
	cfg.Concurrency = 2
	cfg.JobTimeout = buildgw.Duration(cmp.Or(o.jobTimeout, 5*time.Minute))
	cfg.ShutdownGrace = buildgw.Duration(cmp.Or(o.shutdownGrace, 2*time.Second))
	cfg.Context.MaxBytes = cmp.Or(o.maxContextBytes, 64<<20)
	cfg.Context.MaxFiles = int(cmp.Or(o.maxContextFiles, 2000))
	cfg.Registries = map[string]buildgw.Registry{
		g.dest.Host: {
			Username: g.dest.Username, PasswordFile: g.dest.PasswordFile, CAFile: g.dest.CAFile,
			SandboxPull: &buildgw.PullAccount{Username: g.dest.Puller, PasswordFile: g.dest.PullerPasswordFile},
		},
		g.base.Host: {Insecure: true},
	}
	cfg.Runners.Kaniko.Executor = exe
	g.auditFile = filepath.Join(t.TempDir(), "audit.log")
	cfg.Audit.File = g.auditFile
	if o.config != nil {
		o.config(g, &cfg)
	}
	pol := testgateway.Policy{Rules: []testgateway.Rule{{
		Name:  "test-tokens",
		Match: map[string]string{"kind": "token"},
		Allow: testgateway.Allow{
			Destinations: []string{g.dest.Host + "/team/**"},
			From:         []string{g.base.Host, g.dest.Host},
			Runners:      []string{"kaniko", "dind"},
		},
	}}}
	if o.policy != nil {
		pol = o.policy(g)
	}
	if o.policyFile != nil {
		cfg.PolicyFile = filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(cfg.PolicyFile, o.policyFile(g), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g.gw = testgateway.Start(t, cfg, testgateway.WithBinary(filepath.Join(g.bin, "buildgw")),
		testgateway.WithCAFile(g.caFile), testgateway.WithPolicy(pol))
	g.proc, g.exited = g.gw.Cmd, g.gw.Exited()
	return g
}

// launch starts the gateway process again with its config, after a test
// stopped or killed it, and waits until it is healthy. Its output adds to
// the same log.
func (g *gateway) launch(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(60*time.Second))
	defer cancel()
	if err := g.gw.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	g.proc, g.exited = g.gw.Cmd, g.gw.Exited()
}

func (g *gateway) httpClient() *http.Client { return g.gw.HTTPClient() }

// cli runs buildctl-lite as token's owner and returns stdout, stderr and
// the exit code.
func (g *gateway) cli(t *testing.T, token string, args ...string) (string, string, int) {
	t.Helper()
	return g.cliEnv(t, g.url, token, args...)
}

func (g *gateway) cliEnv(t *testing.T, url, token string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(5*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(g.bin, "buildctl-lite"), args...)
	cmd.Env = append(os.Environ(), "BUILDGW_URL="+url, "BUILDGW_TOKEN="+token, "SSL_CERT_FILE="+g.caFile)
	return runOut(t, cmd)
}

// runOut runs cmd and returns its stdout, stderr and exit code; only a
// command that cannot run at all fails the test.
func runOut(t *testing.T, cmd *exec.Cmd) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", cmd.Path, err)
	}
	return stdout.String(), stderr.String(), code
}

// pull fetches ref from the destination registry with its credentials.
func (g *gateway) pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: g.dest.Username, Password: g.dest.Password}),
		remote.WithTransport(g.dest.HTTPClient().Transport))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	return img
}

type file struct {
	hdr     *tar.Header
	content string
}

// files returns the flattened filesystem of img.
func files(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(io.LimitReader(tr, 1<<20))
		out[strings.TrimPrefix(h.Name, "/")] = file{h, string(b)}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// do sends one request to the gateway as token's owner (none if empty)
// and returns the status and body.
func (g *gateway) do(t *testing.T, method, path, token, contentType string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

func (g *gateway) listBuilds(t *testing.T, token string) []api.Build {
	t.Helper()
	_, raw := g.do(t, http.MethodGet, "/v1/builds", token, "", nil)
	var l api.BuildList
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatalf("GET /v1/builds = %s: %v", raw, err)
	}
	return l.Builds
}

// jobsLeft lists the workspaces left in the gateway's state directory,
// on disk or in memory.
func (g *gateway) jobsLeft(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, d := range workspaceDirs(g.stateDir) {
		entries, err := os.ReadDir(d)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != ".trash" { // the tmpfs's own trash, emptied in the background
				names = append(names, e.Name())
			}
		}
	}
	return names
}

// workspaceDirs are where a gateway with state directory stateDir keeps
// workspaces: on disk, and on its tmpfs.
func workspaceDirs(stateDir string) []string {
	return workspace.NewLayout(stateDir).WorkspaceDirs()
}

// waitNoWorkspaces waits for running jobs' workspaces to be removed.
func (g *gateway) waitNoWorkspaces(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(10 * time.Second))
	for len(g.jobsLeft(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("workspaces left behind: %v", g.jobsLeft(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

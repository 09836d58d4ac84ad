package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	buildgw "github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testgateway"
)

// registryProxy passes TCP connections, TLS and all, through to the
// destination registry, whose certificate is for 127.0.0.1 and so holds
// on the proxy's port too. From its first connection on it either cuts
// every connection for outage, or (hang) takes what it is sent and never
// answers. Only the push reaches it: builds take their base from the
// base registry.
type registryProxy struct {
	ln       net.Listener
	upstream string
	outage   time.Duration
	hang     bool
	quit     chan struct{} // closed when the test ends: hung connections close

	mu    sync.Mutex
	began time.Time // the first connection

	cut, forwarded, held atomic.Int32
}

// startRegistryProxy listens on loopback at once, so that the gateway's
// config can name it; serve starts forwarding once the upstream exists.
func startRegistryProxy(t *testing.T, outage time.Duration, hang bool) *registryProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &registryProxy{ln: ln, outage: outage, hang: hang, quit: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		close(p.quit)
	})
	return p
}

func (p *registryProxy) host() string { return p.ln.Addr().String() }

func (p *registryProxy) serve(upstream string) {
	p.upstream = upstream
	go func() {
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
}

func (p *registryProxy) handle(c net.Conn) {
	p.mu.Lock()
	if p.began.IsZero() {
		p.began = time.Now()
	}
	down := time.Since(p.began) < p.outage
	p.mu.Unlock()
	switch {
	case p.hang:
		p.held.Add(1)
		go func() {
			<-p.quit
			c.Close()
		}()
		io.Copy(io.Discard, c)
	case down:
		p.cut.Add(1)
		// A reset: the nearest to a registry whose port nobody listens
		// on that keeps the port ours for when it comes back.
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	default:
		p.forwarded.Add(1)
		defer c.Close()
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			return
		}
		defer u.Close()
		go func() {
			io.Copy(u, c)
			u.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(c, u)
	}
}

func (p *registryProxy) outageBegan() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.began
}

// proxiedGateway starts a gateway that pushes to the destination registry
// through p, with the destination's credentials and CA, and whose policy
// allows pushes to p's host only and FROM the base registry only.
func proxiedGateway(t *testing.T, p *registryProxy, push buildgw.Push, jobTimeout time.Duration) *gateway {
	t.Helper()
	return startGatewayWith(t, gatewayOptions{
		jobTimeout: jobTimeout,
		config: func(g *gateway, c *buildgw.Config) {
			p.serve(g.dest.Host)
			c.Registries[p.host()] = buildgw.Registry{
				Username: g.dest.Username, PasswordFile: g.dest.PasswordFile, CAFile: g.dest.CAFile,
				SandboxPull: &buildgw.PullAccount{Username: g.dest.Puller, PasswordFile: g.dest.PullerPasswordFile},
			}
			c.Push = push
		},
		policy: func(g *gateway) testgateway.Policy {
			return testgateway.Policy{Rules: []testgateway.Rule{{
				Name:  "test-tokens",
				Match: map[string]string{"kind": "token"},
				Allow: testgateway.Allow{
					Destinations: []string{p.host() + "/team/**"},
					From:         []string{g.base.Host},
					Runners:      []string{"kaniko"},
				},
			}}}
		},
	})
}

// TestPushOutlastsRegistryOutage: the destination registry goes away for
// 30 s from the moment the push first reaches it, far longer than pushes
// used to retry for (about 7 s), and the build still succeeds: the gateway
// retries, says so in the build log, and the image lands in the registry.
func TestPushOutlastsRegistryOutage(t *testing.T) {
	const outage = 30 * time.Second
	p := startRegistryProxy(t, outage, false)
	g := proxiedGateway(t, p, buildgw.Push{RetryFor: buildgw.Duration(5 * time.Minute), RequestTimeout: buildgw.Duration(time.Minute)}, 0)
	tok := g.tokens["ci"]

	ref := p.host() + "/team/outage:1"
	stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+g.busybox, "--build-arg", "FLAVOR=outage", "testdata/features")
	done := time.Now()
	if code != 0 {
		t.Fatalf("submit through a %s registry outage = exit %d, want 0 (cut %d, forwarded %d connections)\n%s",
			outage, code, p.cut.Load(), p.forwarded.Load(), tail(stderr, 20))
	}
	digest := lastLine(stdout)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("last stdout line = %q, want a digest", digest)
	}

	// The outage happened, during the push, and the push outlasted it.
	began := p.outageBegan()
	if p.cut.Load() < 2 || p.forwarded.Load() == 0 {
		t.Errorf("proxy cut %d and forwarded %d connections, want at least 2 cut (retries) and some forwarded after the outage",
			p.cut.Load(), p.forwarded.Load())
	}
	if took := done.Sub(began); began.IsZero() || took < outage {
		t.Errorf("build ended %s after the outage began, want at least %s", took.Round(time.Second), outage)
	}

	// The gateway told the build log each retry and why, after the push
	// began, both in the stream submit printed and in the stored log.
	retry := regexp.MustCompile(`push to ` + regexp.QuoteMeta(p.host()) + ` failed \(.+\), retrying in \S+`)
	pushing := strings.Index(stderr, "pushing "+ref+"@"+digest)
	if pushing < 0 {
		t.Errorf("submit's log lacks the push line %q:\n%s", "pushing "+ref+"@"+digest, tail(stderr, 20))
	}
	if n := len(retry.FindAllString(stderr[max(pushing, 0):], -1)); n < 2 {
		t.Errorf("submit's log holds %d retry lines after the push began, want one per cut attempt (at least 2):\n%s", n, tail(stderr, 20))
	}
	id := g.listBuilds(t, tok)[0].ID
	logs, lerr, code := g.cli(t, tok, "logs", id)
	if code != 0 || !retry.MatchString(logs) {
		t.Errorf("logs %s = exit %d (%s), want the retry lines:\n%s", id, code, lerr, tail(logs, 20))
	}

	// The image in the real registry is the build's, whole.
	img := g.pull(t, g.dest.Host+"/team/outage:1")
	if d, _ := img.Digest(); d.String() != digest {
		t.Errorf("digest of the pushed image = %s, want %s (the printed one)", d, digest)
	}
	fs := files(t, img)
	for f, want := range map[string]string{
		"app/APP.txt":            "HELLO APP\n",
		"app/flavor.txt":         "flavor=outage\n",
		"app/notes.txt":          "some notes\n",
		"app/dir/sub/nested.txt": "nested\n",
		"app/built.txt":          "built\n",
	} {
		if got, ok := fs[f]; !ok || got.content != want {
			t.Errorf("file %s = %q (present %v), want %q", f, got.content, ok, want)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Cmd, " "); got != "cat /app/APP.txt" {
		t.Errorf("cmd = %q, want %q", got, "cat /app/APP.txt")
	}
	env := strings.Join(cf.Config.Env, "\n")
	for _, want := range []string{"APP_HOME=/app", "GREETING=hello world"} {
		if !strings.Contains(env, want) {
			t.Errorf("env = %q, want it to hold %q", cf.Config.Env, want)
		}
	}
	t.Logf("outage of %s: %d connections cut, build ended %s after it began; first retry: %s",
		outage, p.cut.Load(), done.Sub(began).Round(time.Second), retry.FindString(stderr))
}

// TestBuildFailsOnHungRegistry: a destination registry that accepts
// connections but never answers fails the build within about
// push.request_timeout, in one attempt, naming the registry and the
// setting, though push.retry_for would allow retries for 10 minutes.
func TestBuildFailsOnHungRegistry(t *testing.T) {
	const requestTimeout = 3 * time.Second
	p := startRegistryProxy(t, 0, true)
	// The job's own timeout is beyond the test's bound: only the request
	// timeout may end this build in time.
	g := proxiedGateway(t, p, buildgw.Push{RetryFor: buildgw.Duration(10 * time.Minute), RequestTimeout: buildgw.Duration(requestTimeout)}, time.Hour)
	tok := g.tokens["ci"]

	bound := testenv.Scale(2 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(g.bin, "buildctl-lite"), "submit", "-t", p.host()+"/team/hung:1", "--build-arg", "BASE="+g.busybox, "testdata/simple")
	cmd.Env = append(os.Environ(), "BUILDGW_URL="+g.url, "BUILDGW_TOKEN="+tok, "SSL_CERT_FILE="+g.caFile)
	start := time.Now()
	stdout, stderr, code := runOut(t, cmd)
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("submit to a hung registry still running after %s, want it failed within about the request timeout %s:\n%s",
			took.Round(time.Second), requestTimeout, tail(stderr, 20))
	}
	if code == 0 {
		t.Fatalf("submit to a hung registry = exit 0 (%s), want a failure", lastLine(stdout))
	}
	if p.held.Load() == 0 {
		t.Errorf("hung proxy saw no connection: the push never reached it")
	}

	want := "registry " + p.host() + " stopped answering after 1 attempt"
	if !strings.Contains(stderr, want) || !strings.Contains(stderr, "request_timeout") {
		t.Errorf("submit's stderr lacks %q naming request_timeout:\n%s", want, tail(stderr, 20))
	}
	if strings.Contains(stderr, "retrying in") {
		t.Errorf("submit's log shows a retry of a hung registry:\n%s", tail(stderr, 20))
	}
	b := g.listBuilds(t, tok)[0]
	if b.Status != "failed" || !strings.Contains(b.Error, want) || !strings.Contains(b.Error, "request_timeout") {
		t.Errorf("build status = %s, error %q; want failed with an error containing %q and naming request_timeout", b.Status, b.Error, want)
	}
	t.Logf("hung registry: build failed after %s with %q", took.Round(time.Second), b.Error)
}

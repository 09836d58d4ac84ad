package e2e

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
)

// lossyProxy forwards TCP connections to upstream. On its first
// connection it lets the request through but drops the answer: the
// gateway has accepted the build, the client never hears of it. That is
// the case a retry must not turn into a second build.
type lossyProxy struct {
	ln       net.Listener
	upstream string
	conns    atomic.Int32
}

func startLossyProxy(t *testing.T, upstream string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, upstream: upstream}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *lossyProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		n := p.conns.Add(1)
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", p.upstream)
			if err != nil {
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			if n == 1 {
				// Wait for the answer to start, then cut both sides.
				buf := make([]byte, 1)
				u.SetReadDeadline(time.Now().Add(testenv.Scale(2 * time.Minute)))
				u.Read(buf)
				return
			}
			io.Copy(c, u)
		}()
	}
}

func TestRetryDoesNotDoubleBuild(t *testing.T) {
	// Plain HTTP, so that the first byte from upstream is the answer to
	// the first request and not a TLS handshake.
	g := startGatewayTLS(t, false)
	p := startLossyProxy(t, strings.TrimPrefix(g.url, "http://"))
	tok := g.tokens["retry"]
	url := "http://" + p.ln.Addr().String()
	stdout, stderr, code := g.cliEnv(t, url, tok, "submit", "-t", g.dest.Host+"/team/retry:1", "--build-arg", "BASE="+g.busybox, "testdata/simple")
	if code != 0 {
		t.Fatalf("submit through a lossy proxy = exit %d, want 0\n%s", code, stderr)
	}
	if p.conns.Load() < 2 {
		t.Fatalf("proxy saw %d connections, want a retry", p.conns.Load())
	}
	builds := g.listBuilds(t, tok)
	if len(builds) != 1 {
		t.Fatalf("builds after a retried submit = %d, want 1: %+v", len(builds), builds)
	}
	if got := lastLine(stdout); got != builds[0].Digest {
		t.Errorf("printed digest = %q, want %q", got, builds[0].Digest)
	}
}

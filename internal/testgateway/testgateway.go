// Package testgateway starts a buildgw gateway for tests (Start) and
// benchmarks (Launch) from a typed gateway.Config: the one way tests and
// benchmarks start a gateway to build with. (The gateway package's own
// tests call gateway.New, and e2e's dev-mode tests run `buildgw serve
// --dev`: those are what they test.)
//
// Two modes, chosen by the caller:
//
//   - in process (the default): gateway.New and Serve in this process, on
//     127.0.0.1:0; URL is the listener's own address. For tests and
//     benchmarks that measure or exercise the gateway's packages, not its
//     binary.
//   - the real binary (WithBinary): the Config is written with yaml.Marshal
//     (never by hand) to a file that `buildgw serve --config` reads. The
//     listen address is fixed before the start: the Config's if it names a
//     port, else a free loopback port picked here. The gateway is ready
//     when GET /healthz on that address answers 200, polled until a
//     deadline; its output is never parsed. e2e uses this mode: it tests
//     the real binaries.
//
// What the Config leaves at its default, Start fills in: a loopback
// listen address, a state directory of its own (mode 0711, so that the
// sandbox user can reach its workspace), a static token named "test" when
// no identity is configured, a registry (go-containerregistry's, blobs on
// disk) when none is, and a policy file (WithPolicy, or by default: every
// token may push to REGISTRY/** and build FROM REGISTRY). Start from
// gateway.DefaultConfig(): a zero Config lacks the defaults that
// LoadConfig would add.
//
// Deadlines of the waits here are stretched by testenv's time scale
// (BUILDGW_TEST_TIMEOUT_SCALE) in Start; Launch takes them from ctx.
package testgateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// Gateway is a running gateway.
type Gateway struct {
	// URL is the API's base URL.
	URL string
	// Token is the static token Start made, or "" when the Config named
	// its own identities.
	Token string
	// Registry is the host:port of the registry Start made, or
	// "" when the Config named its own registries.
	Registry string
	// Config is the configuration the gateway runs with, defaults filled
	// in; ConfigFile is where it was written (binary mode only).
	Config     gateway.Config
	ConfigFile string
	// Cmd is the gateway process (binary mode only), replaced by Restart.
	Cmd *exec.Cmd

	o       options
	out     *syncBuffer
	exited  chan struct{}
	cancel  context.CancelFunc // in process: ends Serve
	served  chan error
	cleanup []func()
	stopped bool
}

// Option configures Start and Launch.
type Option func(*options)

type options struct {
	binary   string
	env      []string
	policy   *Policy
	caFile   string
	output   io.Writer
	ready    time.Duration
	logLevel slog.Level
}

// WithBinary runs the buildgw binary at path instead of an in-process
// gateway. Default: in process.
func WithBinary(path string) Option { return func(o *options) { o.binary = path } }

// WithEnv adds environment variables to the binary's. Default: none.
func WithEnv(kv ...string) Option { return func(o *options) { o.env = append(o.env, kv...) } }

// WithPolicy is the policy written when the Config has no policy_file.
// Default: every token may push to REGISTRY/** and pull from REGISTRY.
func WithPolicy(p Policy) Option { return func(o *options) { o.policy = &p } }

// WithCAFile names the PEM roots that verify the gateway's TLS
// certificate for the readiness check. Default: the system's.
func WithCAFile(path string) Option { return func(o *options) { o.caFile = path } }

// WithOutput also copies the gateway's log to w. Default: kept in memory
// only (Log).
func WithOutput(w io.Writer) Option { return func(o *options) { o.output = w } }

// WithLogLevel is the in-process gateway's log level. Default
// slog.LevelInfo.
func WithLogLevel(l slog.Level) Option { return func(o *options) { o.logLevel = l } }

// WithReadyTimeout bounds the wait for /healthz (before the time scale).
// Default 60s.
func WithReadyTimeout(d time.Duration) Option { return func(o *options) { o.ready = d } }

// Policy is a policy file, typed; see examples/policy/policy.yaml.
type Policy struct {
	Rules []Rule `yaml:"rules"`
}

// Rule is one policy rule.
type Rule struct {
	Name  string            `yaml:"name"`
	Match map[string]string `yaml:"match"`
	Allow Allow             `yaml:"allow"`
}

// Allow is what a rule grants.
type Allow struct {
	Destinations []string `yaml:"destinations,omitempty"`
	From         []string `yaml:"from,omitempty"`
	Runners      []string `yaml:"runners,omitempty"`
	Network      string   `yaml:"network,omitempty"`
	Limits       *Limits  `yaml:"limits,omitempty"`
}

// Limits are a rule's limits.
type Limits struct {
	Timeout         string `yaml:"timeout,omitempty"`
	MaxContextBytes int64  `yaml:"max_context_bytes,omitempty"`
	MaxConcurrent   int    `yaml:"max_concurrent,omitempty"`
}

// Start starts a gateway for tb and stops it when tb ends, logging the
// gateway's output if tb failed. Any error fails tb.
func Start(tb testing.TB, cfg gateway.Config, opts ...Option) *Gateway {
	tb.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	if cfg.StateDir == "" || cfg.StateDir == gateway.DefaultConfig().StateDir {
		cfg.StateDir = filepath.Join(testenv.StateDir(tb), "state")
	}
	ready := testenv.Scale(cmpDuration(o.ready, 60*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), ready)
	defer cancel()
	g, err := Launch(ctx, cfg, append(opts, WithReadyTimeout(ready))...)
	if err != nil {
		tb.Fatalf("starting the gateway: %v", err)
	}
	tb.Cleanup(func() {
		if err := g.Stop(); err != nil {
			tb.Errorf("stopping the gateway: %v", err)
		}
		if tb.Failed() {
			tb.Logf("gateway log:\n%s", g.Log())
		}
	})
	return g
}

// Launch starts a gateway, for benchmarks (which have no testing.TB);
// ctx bounds the start. The caller must Stop it.
func Launch(ctx context.Context, cfg gateway.Config, opts ...Option) (_ *Gateway, err error) {
	g := &Gateway{out: &syncBuffer{}}
	for _, f := range opts {
		f(&g.o)
	}
	g.o.ready = cmpDuration(g.o.ready, 60*time.Second)
	if g.o.output != nil {
		g.out.tee = g.o.output
	}
	defer func() {
		if err != nil {
			g.Stop()
		}
	}()
	if err := g.fill(&cfg); err != nil {
		return nil, err
	}
	g.Config = cfg
	if g.o.binary == "" {
		return g, g.startInProcess(ctx)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshalling the config: %w", err)
	}
	g.ConfigFile = filepath.Join(filepath.Dir(cfg.StateDir), "buildgw.yaml")
	if err := os.WriteFile(g.ConfigFile, b, 0o600); err != nil {
		return nil, err
	}
	return g, g.Restart(ctx)
}

// fill sets what the Config leaves at its defaults; see the package doc.
func (g *Gateway) fill(cfg *gateway.Config) error {
	if cfg.StateDir == "" || cfg.StateDir == gateway.DefaultConfig().StateDir {
		dir, err := os.MkdirTemp("", "buildgw-gateway-")
		if err != nil {
			return err
		}
		g.cleanup = append(g.cleanup, func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o711); err != nil {
			return err
		}
		cfg.StateDir = filepath.Join(dir, "state")
	}
	// The config file, policy and audit log go beside the state directory.
	dir := filepath.Dir(cfg.StateDir)
	if cfg.Listen == "" || cfg.Listen == gateway.DefaultConfig().Listen {
		cfg.Listen = "127.0.0.1:0"
	}
	if _, port, _ := net.SplitHostPort(cfg.Listen); port == "0" && g.o.binary != "" {
		addr, err := testenv.LoopbackAddr()
		if err != nil {
			return err
		}
		cfg.Listen = addr
	}
	if len(cfg.Tokens)+len(cfg.OIDCIssuers)+len(cfg.MTLSIdentities) == 0 {
		var b [24]byte
		rand.Read(b[:])
		g.Token = "test-" + hex.EncodeToString(b[:])
		cfg.Tokens = []gateway.Token{{Name: "test", SHA256: token.HashToken(g.Token)}}
	}
	if len(cfg.Registries) == 0 {
		// Blobs on disk, beside the state directory, as in dev mode: a
		// benchmark pushes gigabytes.
		blobs := filepath.Join(dir, "registry")
		if err := os.MkdirAll(blobs, 0o700); err != nil {
			return err
		}
		s := httptest.NewServer(registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)), registry.Logger(log.New(io.Discard, "", 0))))
		g.cleanup = append(g.cleanup, s.Close)
		g.Registry = s.Listener.Addr().String()
		cfg.Registries = map[string]gateway.Registry{g.Registry: {Insecure: true}}
	}
	if cfg.PolicyFile == "" {
		p := g.o.policy
		if p == nil {
			var hosts []string
			for h := range cfg.Registries {
				hosts = append(hosts, h)
			}
			p = &Policy{Rules: []Rule{{Name: "test-tokens", Match: map[string]string{"kind": "token"}, Allow: Allow{From: hosts}}}}
			for _, h := range hosts {
				p.Rules[0].Allow.Destinations = append(p.Rules[0].Allow.Destinations, h+"/**")
			}
		}
		b, err := yaml.Marshal(p)
		if err != nil {
			return fmt.Errorf("marshalling the policy: %w", err)
		}
		cfg.PolicyFile = filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(cfg.PolicyFile, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (g *Gateway) startInProcess(ctx context.Context) error {
	gw, err := gateway.New(g.Config, slog.New(slog.NewJSONHandler(g.out, &slog.HandlerOptions{Level: g.o.logLevel})))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.served, g.exited = cancel, make(chan error, 1), make(chan struct{})
	go func() { g.served <- gw.Serve(sctx); close(g.exited) }()
	g.URL = gw.URL()
	return g.waitReady(ctx)
}

// Restart starts the binary again with the same config and log, after the
// caller stopped or killed it (binary mode only).
func (g *Gateway) Restart(ctx context.Context) error {
	if g.o.binary == "" {
		return errors.New("restart: only the binary can be restarted")
	}
	cmd := exec.Command(g.o.binary, "serve", "--config", g.ConfigFile)
	cmd.Env = append(os.Environ(), g.o.env...)
	cmd.Stdout, cmd.Stderr = g.out, g.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", g.o.binary, err)
	}
	g.Cmd, g.stopped = cmd, false
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	g.exited = exited
	scheme := "http"
	if g.Config.TLS.CertFile != "" {
		scheme = "https"
	}
	g.URL = scheme + "://" + g.Config.Listen
	return g.waitReady(ctx)
}

// waitReady polls /healthz until it answers 200, the gateway exits, or
// the ready timeout or ctx ends.
func (g *Gateway) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.o.ready)
	defer cancel()
	hc := g.HTTPClient()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/healthz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		last = err
		select {
		case <-g.exited:
			return fmt.Errorf("gateway exited before it was ready:\n%s", tail(g.Log(), 20))
		case <-ctx.Done():
			return fmt.Errorf("gateway not ready: %v (%v)\n%s", ctx.Err(), last, tail(g.Log(), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// HTTPClient returns a client that trusts the gateway's TLS roots
// (WithCAFile).
func (g *Gateway) HTTPClient() *http.Client {
	if g.o.caFile == "" {
		return &http.Client{}
	}
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(g.o.caFile)
	pool.AppendCertsFromPEM(b)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Exited is closed when the gateway has exited (the current process, in
// binary mode).
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// Log is what the gateway has logged so far.
func (g *Gateway) Log() string { return g.out.String() }

// Stop interrupts the gateway and waits for it, killing the binary after
// 20s (scaled), then removes what Launch made. Stopping twice is a no-op.
func (g *Gateway) Stop() error {
	var err error
	switch {
	case g.stopped:
	case g.cancel != nil:
		g.cancel()
		err = <-g.served
	case g.Cmd != nil:
		g.Cmd.Process.Signal(os.Interrupt)
		select {
		case <-g.exited:
		case <-time.After(testenv.Scale(20 * time.Second)):
			g.Cmd.Process.Kill()
			<-g.exited
			err = errors.New("gateway did not stop within 20s of SIGINT: killed")
		}
	}
	g.stopped = true
	if g.Config.StateDir != "" {
		// A gateway killed with builds queued leaves the workspaces' tmpfs
		// mounted for its next start.
		unix.Unmount(filepath.Join(g.Config.StateDir, "mem"), unix.MNT_DETACH)
	}
	for i := len(g.cleanup) - 1; i >= 0; i-- {
		g.cleanup[i]()
	}
	g.cleanup = nil
	return err
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// syncBuffer is the gateway's output, written by the process or the
// in-process logger and read by the test. It keeps the last
// maxLog/2..maxLog bytes, so that a long benchmark does not hold its
// gateway's whole log in memory.
type syncBuffer struct {
	mu  sync.Mutex
	b   strings.Builder
	tee io.Writer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tee != nil {
		s.tee.Write(p)
	}
	if s.b.Len()+len(p) > maxLog {
		kept := s.b.String()
		kept = kept[max(0, len(kept)-maxLog/2):]
		s.b.Reset()
		s.b.WriteString(kept)
	}
	return s.b.Write(p)
}

const maxLog = 8 << 20

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

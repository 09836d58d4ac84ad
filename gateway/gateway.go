package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/auth/mtls"
	"github.com/buildgw/buildgw/auth/netallow"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
	"github.com/buildgw/buildgw/runners/dind"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/statedir"
)

// Gateway is a configured buildgw, listening but not yet serving.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	mgr    *jobs.Manager
	srv    *http.Server
	drain  *drain
	ln     net.Listener
	policy *policy.Store
	audit  *audit.Logger
	// lock holds the state directory for as long as the gateway lives.
	lock *statedir.Lock
}

// New builds a Gateway from a validated Config and opens its listener.
func New(cfg Config, log *slog.Logger) (_ *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Before anything cleans up or reaps in the state directory: a second
	// gateway on it must touch nothing of the first's.
	lock, err := statedir.Acquire(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Release()
		}
	}()
	if err := checkJobStore(cfg.StateDir, cfg.AcceptEmptyStore, log); err != nil {
		return nil, err
	}
	metrics := server.NewMetrics()
	pstore, err := policy.NewStore(cfg.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	logPolicyWarnings(log, pstore.Policy())
	alog, err := newAuditLog(cfg.Audit)
	if err != nil {
		return nil, err
	}
	p, regOpts, fetchOpts, err := cfg.registryAccess()
	if err != nil {
		return nil, err
	}

	exe := cfg.Runners.Kaniko.Executor
	if exe == "" {
		exe = findExecutor()
	}
	kopts := []kaniko.Option{kaniko.WithExecutor(exe), kaniko.WithUser(cfg.Runners.Kaniko.User), kaniko.WithFlags(cfg.Runners.Kaniko.Flags...),
		kaniko.WithNetwork(cfg.Runners.Kaniko.Network), kaniko.WithNice(cfg.Runners.Kaniko.Nice), kaniko.WithEgressRefuse(cfg.Runners.EgressRefuse...)}
	if !cfg.Runners.Kaniko.DisableLayerCache {
		kopts = append(kopts, kaniko.WithLayerCache(filepath.Join(cfg.StateDir, "layer-cache")), kaniko.WithLayerCacheMaxBytes(cfg.Runners.Kaniko.LayerCacheMaxBytes),
			kaniko.WithResultCache(filepath.Join(cfg.StateDir, "result-cache"), cfg.Runners.Kaniko.ResultCacheMaxBytes))
	}
	kr, err := kaniko.New(append(kopts, kaniko.WithLimits(cfg.Runners.Kaniko.MemoryMax, cfg.Runners.Kaniko.PidsMax))...)
	if errors.Is(err, kaniko.ErrNoCgroups) {
		// A laptop or an unprivileged container: builds still run, with
		// time and context limits only.
		log.Warn("sandboxes run without memory and pids limits", "error", err)
		kr, err = kaniko.New(kopts...)
	}
	if err != nil {
		return nil, err
	}
	if err := kr.Available(context.Background()); err != nil {
		return nil, fmt.Errorf("kaniko runner: %w", err)
	}
	if err := kr.CheckIDRanges(); err != nil {
		// Builds on base images owned by low ids still work.
		log.Warn("kaniko runner: subordinate id range too small", "error", err)
	}
	opts := []jobs.Option{
		jobs.WithRunner("kaniko", kr),
		jobs.WithJobTimeout(time.Duration(cfg.JobTimeout)),
		jobs.WithContextLimits(archive.Limits{MaxBytes: cfg.Context.MaxBytes, MaxFiles: cfg.Context.MaxFiles}),
		jobs.WithLogger(log),
		jobs.WithObserver(metrics),
		jobs.WithMaxQueued(cfg.Queue.MaxQueued, cfg.Queue.perIdentity()),
		jobs.WithMaxUploading(cfg.Queue.MaxUploadingPerIdentity),
		jobs.WithOwnerConcurrency(cfg.Queue.MaxRunningPerIdentity),
		jobs.WithShutdownGrace(time.Duration(cfg.ShutdownGrace)),
		jobs.WithRetention(time.Duration(cfg.Retention)),
		jobs.WithMinFreeBytes(cfg.MinFreeBytes),
		jobs.WithWorkspaceLimit(cfg.WorkspaceMaxBytes),
		jobs.WithLogLimit(cfg.LogMaxBytes),
	}
	memBytes, workspaces := cfg.workspaceMemory(func() bool { return canMount(os.TempDir()) }, jobs.MountedMemory(cfg.StateDir))
	opts = append(opts, jobs.WithMemoryWorkspaces(memBytes))
	log.Info("workspaces", "in", workspaces)
	opts = append(opts, regOpts...)
	if !cfg.Runners.Dind.Disabled {
		dopts, dataRoot := cfg.dindOptions()
		dr, err := dind.New(dopts...)
		if err != nil {
			return nil, fmt.Errorf("dind runner: %w", err)
		}
		opts = append(opts, jobs.WithRunner("dind", dr))
		log.Info("dind runner", "data_root", dataRoot)
	}
	if alog != nil {
		opts = append(opts, jobs.WithObserver(auditObserver{alog}))
	}
	if cfg.Concurrency > 0 {
		opts = append(opts, jobs.WithConcurrency(cfg.Concurrency))
	}
	if uid, gid, differs := kr.Owner(); differs {
		opts = append(opts, jobs.WithWorkspaceOwner(uid, gid))
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	// The sandbox user must be able to reach its workspace, but not list
	// anyone else's.
	if err := os.Chmod(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("securing state directory: %w", err)
	}
	if _, _, differs := kr.Owner(); differs {
		if err := checkTraversable(cfg.StateDir); err != nil {
			return nil, err
		}
	}
	// Base images are fetched by the gateway, once, into a store shared by
	// all builds.
	bases, err := basestore.New(filepath.Join(cfg.StateDir, "base-images"),
		basestore.WithMaxBytes(cfg.BaseImages.MaxBytes), basestore.WithRemoteOptions(fetchOpts))
	if err != nil {
		return nil, err
	}
	var insecure []string
	for host, r := range cfg.Registries {
		if r.Insecure {
			insecure = append(insecure, host)
		}
	}
	authz := policyAuthorizer{store: pstore, bases: bases, insecure: insecure, log: log}
	opts = append(opts, jobs.WithBaseImages(bases), jobs.WithBaseCheck(authz.CheckBase))
	mgr, err := jobs.New(cfg.StateDir, p, opts...)
	if err != nil {
		return nil, err
	}
	metrics.Watch(mgr)
	authn, err := cfg.authenticator()
	if err != nil {
		return nil, err
	}
	sopts := []server.Option{server.WithMetrics(metrics), server.WithPolicy(authz),
		server.WithUploadRate(server.UploadRate{MinBytesPerSecond: cfg.Context.MinUploadBytesPerSecond, Window: time.Duration(cfg.Context.UploadRateWindow)}), server.WithDownloads(downloadsDir(cfg.DownloadsDir))}
	if alog != nil {
		sopts = append(sopts, server.WithAudit(alog))
	}
	if len(cfg.AllowNetworks) > 0 {
		l, err := netallow.Parse(cfg.AllowNetworks)
		if err != nil {
			return nil, fmt.Errorf("allow_networks: %w", err)
		}
		sopts = append(sopts, server.WithNetworks(l))
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		mgr.Close()
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	dr := newDrain(server.New(mgr, authn, log, sopts...), mgr.Ended)
	srv := &http.Server{
		Handler:           dr,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLS.CertFile != "" {
		tc, err := mtls.ServerTLSConfig(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ClientCAFile)
		if err != nil {
			ln.Close()
			mgr.Close()
			return nil, fmt.Errorf("loading TLS configuration: %w", err)
		}
		srv.TLSConfig = tc
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	return &Gateway{cfg: cfg, log: log, mgr: mgr, srv: srv, drain: dr, ln: ln, policy: pstore, audit: alog, lock: lock}, nil
}

// URL is the API's base URL.
func (g *Gateway) URL() string {
	scheme := "http"
	if g.cfg.TLS.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + g.ln.Addr().String()
}

// Serve serves the API and runs builds until ctx ends, then shuts down:
// no new requests, running builds are stopped and recorded.
func (g *Gateway) Serve(ctx context.Context) error {
	var pprofLn net.Listener
	if g.cfg.PprofListen != "" {
		var err error
		if pprofLn, err = net.Listen("tcp", g.cfg.PprofListen); err != nil {
			return fmt.Errorf("pprof_listen: %w", err)
		}
	}
	if stopBackups, err := serveBackups(g.cfg.StateDir, g.mgr, g.log); err != nil {
		// Builds matter more than online backups.
		g.log.Error("no backup socket: buildgw backup works only while the gateway is stopped", "error", err)
	} else {
		defer stopBackups()
	}
	eg, ctx := errgroup.WithContext(ctx)
	mgrDone := make(chan struct{})
	eg.Go(func() error { defer close(mgrDone); return g.mgr.Run(ctx) })
	eg.Go(func() error {
		if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
		return nil
	})
	eg.Go(func() error { g.policy.Watch(ctx, g.log, 5*time.Second); return nil })
	eg.Go(func() error {
		// SIGHUP reloads the policy (a bad file keeps the old one) and
		// reopens the audit log after rotation.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				g.Reload()
			}
		}
	})
	eg.Go(func() error {
		<-ctx.Done()
		// Reads, log streams and uploads under way go on while running
		// builds get their grace period; then streams end saying how to
		// reattach, and what is still open gets the rest of the period.
		stopping := time.Now()
		g.drain.start()
		<-mgrDone
		g.drain.closeStreams()
		if g.audit != nil {
			defer g.audit.Close()
		}
		deadline := stopping.Add(time.Duration(g.cfg.ShutdownGrace))
		if soon := time.Now().Add(5 * time.Second); deadline.Before(soon) {
			deadline = soon
		}
		sctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		if err := g.srv.Shutdown(sctx); err != nil {
			g.log.Warn("requests still open at the end of the shutdown grace period were cut off", "error", err)
			g.srv.Close()
		}
		return nil
	})
	if pprofLn != nil {
		g.servePprof(ctx, eg, pprofLn)
	}
	g.log.Info("buildgw serving", "url", g.URL(), "state_dir", g.cfg.StateDir)
	err := eg.Wait()
	if cerr := g.mgr.Close(); err == nil {
		err = cerr
	}
	g.lock.Release()
	return err
}

// servePprof serves Go's profiles on ln (pprof_listen, loopback) until
// ctx ends.
func (g *Gateway) servePprof(ctx context.Context, eg *errgroup.Group, ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	eg.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving pprof: %w", err)
		}
		return nil
	})
	eg.Go(func() error { <-ctx.Done(); return srv.Close() })
	g.log.Info("pprof serving", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
}

// Reload re-reads the policy file and reopens the audit log.
func (g *Gateway) Reload() {
	if err := g.policy.Reload(); err != nil {
		g.log.Error("policy reload failed; keeping the old policy", "file", g.cfg.PolicyFile, "error", err)
	} else {
		g.log.Info("policy reloaded", "file", g.cfg.PolicyFile)
		logPolicyWarnings(g.log, g.policy.Policy())
	}
	if g.audit != nil {
		if err := g.audit.Reopen(); err != nil {
			g.log.Error("reopening audit log", "error", err)
		}
	}
}

// findExecutor looks for kaniko-executor next to the running binary, then
// on PATH.
func findExecutor() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "kaniko-executor")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("kaniko-executor"); err == nil {
		return p
	}
	return "kaniko-executor"
}

// downloadsDir is dir, or by default the running binary's directory when
// it holds a buildctl-lite (as bin/ does after a build, and the release
// image does).
func downloadsDir(dir string) string {
	if dir != "" {
		return dir
	}
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(self), "buildctl-lite*"))
	if len(matches) == 0 {
		return ""
	}
	return filepath.Dir(self)
}

// checkTraversable makes sure that the sandbox user, which is neither the
// owner nor in the group of the state directory, can reach its workspace
// inside it.
func checkTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("state directory %s is unreachable for the sandbox user: %s lacks o+x (chmod o+x %s)", dir, d, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

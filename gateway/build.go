package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/auth/mtls"
	"github.com/buildgw/buildgw/auth/netallow"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
	"github.com/buildgw/buildgw/push"
	"github.com/buildgw/buildgw/statedir"
	"github.com/buildgw/buildgw/workspace"
)

// A gateway is put together in three layers: Config, pure, checked by
// Validate; load, which reads what the configuration names and touches
// nothing; and build, which makes each component once, in order, and
// pushes how to undo it onto a stack that is unwound if a later step
// fails, so that a failed New leaves no lock held, no file open and
// nothing mounted. The host probes it uses are in probes.go.

// A write to an API client must complete within writeTimeout: a log
// stream's each, any other answer's each and a download of the client
// as a whole within it plus their size at minDownloadBytesPerSecond. A
// client that stops reading then loses its connection rather than
// holding it, and the answer's goroutine, for good. Streams idle between
// writes are not cut.
const (
	writeTimeout              = 30 * time.Second
	minDownloadBytesPerSecond = 64 << 10
)

// undo is a stack of closers.
type undo []func() error

func (u *undo) push(f func() error) { *u = append(*u, f) }

// run runs every closer, the last pushed first, and empties the stack.
func (u *undo) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		errs = append(errs, (*u)[i]())
	}
	*u = nil
	return errors.Join(errs...)
}

// loaded is what the configuration names, read and checked.
type loaded struct {
	policy  *policy.Store
	authn   auth.Authenticator
	pusher  *push.Pusher
	regOpts []jobs.Option
	fetch   []basestore.Option // how the gateway fetches base images
	// secrets are the registry passwords, which the audit log redacts
	// wherever they would appear.
	secrets  []string
	tls      *tls.Config    // nil: plain HTTP (loopback only)
	networks *netallow.List // nil: any client address
	// identities is where each identity may be used from, and whether it
	// is still configured, for its builds' read tokens too.
	identities func(auth.Identity) (auth.Networks, bool)
}

// load reads and checks every file the configuration names: the policy,
// the identities' settings and CAs, registry secrets and CAs, the Docker
// config, the TLS keys. It reports every problem at once and changes
// nothing on the host.
func load(cfg Config) (*loaded, error) {
	var (
		l    loaded
		errs []error
		err  error
	)
	if l.policy, err = policy.NewStore(cfg.PolicyFile); err != nil {
		errs = append(errs, fmt.Errorf("policy_file: %w", err))
	}
	if l.authn, err = cfg.authenticator(); err != nil {
		errs = append(errs, err)
	}
	if l.pusher, l.regOpts, l.fetch, l.secrets, err = cfg.registryAccess(); err != nil {
		errs = append(errs, err)
	}
	if cfg.TLS.CertFile != "" {
		if l.tls, err = mtls.ServerTLSConfig(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ClientCAFile); err != nil {
			errs = append(errs, fmt.Errorf("tls: %w", err))
		}
	}
	if len(cfg.AllowNetworks) > 0 {
		if l.networks, err = netallow.Parse(cfg.AllowNetworks); err != nil {
			errs = append(errs, fmt.Errorf("allow_networks: %w", err))
		}
	}
	if err := checkDownloadsDir(cfg.DownloadsDir); err != nil {
		errs = append(errs, err)
	}
	if l.identities, err = cfg.identities(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &l, nil
}

// build makes the gateway of cfg: each component once, undoing what it
// made if a step fails.
func build(cfg Config, log *slog.Logger) (_ *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l, err := load(cfg)
	if err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if err != nil {
			if uerr := u.run(); uerr != nil {
				log.Error("undoing a failed start", "error", uerr)
			}
		}
	}()

	// Before anything cleans up or reaps in the state directory: a second
	// gateway on it must touch nothing of the first's.
	lock, err := statedir.Acquire(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	u.push(lock.Release)
	layout := workspace.NewLayout(cfg.StateDir)
	var shared jobs.Store
	var replica string
	if f := cfg.Store.PostgresDSNFile; f != "" {
		if replica, err = replicaName(); err != nil {
			return nil, err
		}
		// The kubernetes runner reaps the Pods of its instance at start-up:
		// each replica has an instance of its own, lest it reap the live
		// builds of the others (a dead replica's Pods go by build ID when
		// its builds are taken over).
		if cfg.Runners.Kubernetes.Enabled {
			if cfg.Runners.Kubernetes.Instance, err = replicaInstance(cfg.Runners.Kubernetes.Instance, replica); err != nil {
				return nil, err
			}
		}
		// Replicas share this store; jobs.db is not used.
		if shared, err = openSharedStore(f); err != nil {
			return nil, err
		}
		u.push(shared.Close) // the Manager closes it too; closing twice is harmless
		log.Info("job store: PostgreSQL shared by the replicas", "dsn_file", f, "replica", replica)
	} else if err := checkJobStore(cfg.StateDir, cfg.AcceptEmptyStore, log); err != nil {
		return nil, err
	}
	logPolicyWarnings(log, l.policy.Policy())
	alog, err := newAuditLog(cfg.Audit, l.secrets)
	if err != nil {
		return nil, err
	}
	if alog != nil {
		u.push(alog.Close)
	}

	kr, err := kanikoRunner(context.Background(), cfg, log)
	if err != nil {
		return nil, err
	}
	dr, err := dindRunner(cfg, log)
	if err != nil {
		return nil, err
	}
	k8s, err := kubernetesRunner(cfg, log)
	if err != nil {
		return nil, err
	}
	if k8s != nil {
		u.push(k8s.Close)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	// The sandbox user must be able to reach its workspace, but not list
	// anyone else's.
	if err := os.Chmod(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("securing state directory: %w", err)
	}
	uid, gid, sandboxUser := kr.Owner()
	if sandboxUser {
		if err := checkTraversable(cfg.StateDir); err != nil {
			return nil, err
		}
	}
	// Base images are fetched by the gateway, once, into a store shared by
	// all builds.
	bases, err := basestore.New(layout.BaseImages,
		append([]basestore.Option{basestore.WithMaxBytes(cfg.BaseImages.MaxBytes)}, l.fetch...)...)
	if err != nil {
		return nil, err
	}
	var insecure []string
	for host, r := range cfg.Registries {
		if r.Insecure {
			insecure = append(insecure, host)
		}
	}
	authz := policyAuthorizer{store: l.policy, bases: bases, insecure: insecure, log: log}

	metrics := server.NewMetrics()
	memBytes, workspaces := cfg.workspaceMemory(func() bool { return canMount(os.TempDir()) }, workspace.MountedMemory(layout))
	log.Info("workspaces", "in", workspaces)
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
		jobs.WithMemoryWorkspaces(memBytes),
		jobs.WithBaseImages(bases),
		jobs.WithBaseCheck(authz.CheckBase),
	}
	opts = append(opts, l.regOpts...)
	if dr != nil {
		opts = append(opts, jobs.WithRunner("dind", dr))
	}
	if k8s != nil {
		opts = append(opts, jobs.WithRunner("kubernetes", k8s))
	}
	if alog != nil {
		opts = append(opts, jobs.WithObserver(auditObserver{alog}))
	}
	if cfg.Concurrency > 0 {
		opts = append(opts, jobs.WithConcurrency(cfg.Concurrency))
	}
	if shared != nil {
		opts = append(opts, jobs.WithStore(shared), jobs.WithReplica(replica, replicaLease))
	}
	if sandboxUser {
		opts = append(opts, jobs.WithWorkspaceOwner(uid, gid))
	}
	// The Manager recovers what a previous run left, reaping the runners'
	// leftovers first (builder.Reaper), under the lock taken above.
	mgr, err := jobs.New(layout, l.pusher, opts...)
	if err != nil {
		return nil, err
	}
	u.push(mgr.Close)
	metrics.Watch(mgr)

	sopts := []server.Option{server.WithMetrics(metrics), server.WithPolicy(authz),
		server.WithUploadRate(server.UploadRate{MinBytesPerSecond: cfg.Context.MinUploadBytesPerSecond, Window: time.Duration(cfg.Context.UploadRateWindow)}),
		server.WithBodyTimeout(time.Duration(cfg.RequestBodyTimeout)),
		server.WithWriteRate(server.WriteRate{MinBytesPerSecond: minDownloadBytesPerSecond, Window: writeTimeout}),
		server.WithDownloads(downloadsDir(cfg.DownloadsDir)), server.WithIdentities(l.identities)}
	if alog != nil {
		sopts = append(sopts, server.WithAudit(alog))
	}
	if l.networks != nil {
		sopts = append(sopts, server.WithNetworks(l.networks))
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	u.push(func() error {
		// Serve's shutdown has closed it already.
		if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	d := newDrain(server.New(mgr, l.authn, log, sopts...), mgr.Ended, time.Duration(cfg.RequestBodyTimeout))
	srv := &http.Server{
		Handler:           d,
		ReadHeaderTimeout: 30 * time.Second,
		// No ReadTimeout: net/http would apply it to requests without a
		// body too, and the background read of one that times out
		// cancels the request, ending log streams. Bodies are bounded
		// per request instead (WithBodyTimeout, WithUploadRate).
		IdleTimeout: time.Duration(cfg.IdleTimeout),
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:   l.tls,
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	return &Gateway{cfg: cfg, log: log, mgr: mgr, srv: srv, drain: d, ln: ln, policy: l.policy, audit: alog, undo: u}, nil
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
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
	// undo closes, last first, what build made: the listener, the
	// Manager, the audit log and the state directory's lock, held for
	// as long as the gateway lives.
	undo undo
}

// New builds the Gateway of cfg and opens its listener: see build. If it
// fails, nothing it made is left (no lock held, no file open, nothing
// mounted).
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	return build(cfg, log)
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
	if stopBackups, err := serveBackups(g.cfg.StateDir, g.mgr.BackupStore, backupWriteTimeout, g.log); err != nil {
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
	if cerr := g.undo.run(); err == nil {
		err = cerr
	}
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
	// Loopback only, yet any local user may connect: silent connections
	// are closed.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
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

package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/jobs"
)

const (
	// readyTTL is how long one readiness check answers /readyz. The
	// checks write the job store (an exclusive transaction with an
	// fsync), may ask the Kubernetes API server or run dockerd, and
	// /readyz needs no authentication: a flood of it must cost no more
	// than one check a second.
	readyTTL = time.Second
	// readyTimeout bounds one check, which no single caller may cancel:
	// the callers waiting on it share it.
	readyTimeout = 10 * time.Second
	// readyLogEvery is how often the same failing checks are logged
	// again while they keep failing.
	readyLogEvery = time.Minute
)

// readiness caches the last readiness check and runs at most one at a
// time.
type readiness struct {
	flight singleflight.Group
	mu     sync.Mutex
	at     time.Time // when last was checked
	last   api.Readiness
	// logged is the failing checks last logged, and when.
	logged   string
	loggedAt time.Time
}

// fresh returns the last check's answer if it is recent enough.
func (r *readiness) fresh() (api.Readiness, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, !r.at.IsZero() && time.Since(r.at) < readyTTL
}

// readyz answers with the shared, recent readiness check: the names of
// what failed, never the reasons, which go to the gateway's log.
func (s *Server) readyz(c *gin.Context) {
	ctx := c.Request.Context()
	res, ok := s.ready.fresh()
	if !ok {
		ch := s.ready.flight.DoChan("", func() (any, error) {
			// A caller that waited for the previous check gets its answer.
			if res, ok := s.ready.fresh(); ok {
				return res, nil
			}
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
			defer cancel()
			res := s.checkReady(cctx)
			s.ready.mu.Lock()
			s.ready.at, s.ready.last = time.Now(), res
			s.ready.mu.Unlock()
			return res, nil
		})
		select {
		case r := <-ch:
			res = r.Val.(api.Readiness)
		case <-ctx.Done():
			// The caller left; nobody reads this, and it is not logged.
			c.Error(context.Canceled)
			return
		}
	}
	status := http.StatusOK
	if !res.Ready {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, res)
}

// checkReady checks each runner and the job store; the gateway is ready
// when its default runner is, since builds that ask for no runner get
// that one. It logs why checks fail.
func (s *Server) checkReady(ctx context.Context) api.Readiness {
	res := api.Readiness{Ready: true, Runners: map[string]string{}, Store: "ok"}
	reasons := map[string]error{}
	for name, r := range s.m.Runners() {
		res.Runners[name] = "ok"
		if ch, ok := r.(builder.Checker); ok {
			if err := ch.Available(ctx); err != nil {
				res.Runners[name] = "unavailable"
				reasons["runner:"+name] = err
				if name == s.m.DefaultRunner() {
					res.Ready = false
				}
			}
		}
	}
	if err := s.m.Ready(); err != nil {
		res.Ready, res.Store = false, "unavailable"
		check := "store"
		if re := (*jobs.ReadyError)(nil); errors.As(err, &re) {
			check = re.Check
		}
		reasons[check] = err
	}
	for name := range reasons {
		res.Failing = append(res.Failing, name)
	}
	slices.Sort(res.Failing)
	s.logReadiness(res.Failing, reasons)
	return res
}

// logReadiness logs the reasons of failing checks when the set of them
// changes, and again every readyLogEvery while it stays: not per request.
func (s *Server) logReadiness(failing []string, reasons map[string]error) {
	key := strings.Join(failing, ",")
	r := &s.ready
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == r.logged && (key == "" || time.Since(r.loggedAt) < readyLogEvery) {
		return
	}
	if key == "" {
		s.log.Info("readiness check passes again")
	}
	for _, name := range failing {
		s.log.Warn("readiness check failed", "check", name, "error", reasons[name])
	}
	r.logged, r.loggedAt = key, time.Now()
}

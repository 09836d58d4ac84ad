// The workers: builds leave the fair queue, run on their runner in their
// own workspace under the job timeout, and end exactly once.

package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/jobs/store"
)

var errCancelled = errors.New("cancelled")

// Run runs queued builds until ctx ends, then waits for the running ones
// to stop.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	rctx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		m.ws.Reap(rctx, m.remover(m.o.defaultRunner))
	}()
	defer func() {
		stopReaper()
		<-reaped
	}()
	// Running builds outlive ctx by the grace period; then they are
	// cancelled with errShutdown.
	jobsCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(nil)
	workersDone := make(chan struct{})
	go func() {
		select {
		case <-workersDone:
			return
		case <-ctx.Done():
		}
		q, r := m.Stats()
		m.o.logger.Info("shutting down: waiting for running builds", "running", r, "queued_kept", q, "grace", m.o.shutdownGrace.String())
		t := time.NewTimer(m.o.shutdownGrace)
		defer t.Stop()
		select {
		case <-workersDone:
		case <-t.C:
			cancelJobs(errShutdown)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.janitor(ctx)
	}()
	if m.shared != nil {
		// The lease is renewed while builds run out their grace period.
		hctx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.heartbeat(hctx)
		}()
		defer func() {
			stopHeartbeat()
			wg.Wait()
			lctx, cancel := storeCtx()
			defer cancel()
			// Its builds are all finished or released: let the others
			// forget it at once.
			if err := m.shared.Leave(lctx, m.o.replica); err != nil {
				m.o.logger.Error("leaving the replicas", "error", err)
			}
		}()
	}
	var workers sync.WaitGroup
	for range m.o.concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for {
				j := m.next(ctx)
				if j == nil {
					return
				}
				m.run(jobsCtx, j)
			}
		}()
	}
	workers.Wait()
	close(workersDone)
	if m.shared == nil {
		wg.Wait()
	}
	return nil
}

var errShutdown = errors.New("gateway shut down")

// next blocks until a job may start or ctx ends. Tenants take turns;
// each tenant's jobs start in the order they were accepted, and a tenant
// that already runs as many builds as it may waits without holding up the
// others.
func (m *Manager) next(ctx context.Context) *Job {
	if m.shared != nil {
		return m.claim(ctx)
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		m.mu.Lock()
		if j := m.queue.pop(m.mayStart); j != nil {
			m.running++
			m.runningBy[j.limitKey()]++
			m.mu.Unlock()
			return j
		}
		wake := m.wake
		m.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

func (m *Manager) run(ctx context.Context, j *Job) {
	// The slot is given back before the final state is reported, so that
	// whoever sees the state also sees the build no longer running.
	release := sync.OnceFunc(func() {
		m.mu.Lock()
		m.running--
		k := j.limitKey()
		if m.runningBy[k]--; m.runningBy[k] == 0 {
			delete(m.runningBy, k)
		}
		// A waiting job of the same tenant may start now.
		close(m.wake)
		m.wake = make(chan struct{})
		m.mu.Unlock()
	})
	defer release()
	if m.shared != nil {
		defer close(j.left)
		defer m.dropHeld(j)
	}
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeout := m.o.jobTimeout
	if j.Grant.Timeout > 0 && j.Grant.Timeout < timeout {
		timeout = j.Grant.Timeout
	}
	jctx, cancelTimeout := context.WithTimeoutCause(jctx, timeout, errTimeout)
	defer cancelTimeout()

	j.mu.Lock()
	if j.status.Final() {
		j.mu.Unlock()
		return
	}
	if j.cancelRequested {
		j.mu.Unlock()
		m.cancelUnstarted(j)
		return
	}
	j.status, j.started, j.cancel, j.statusJSON = api.StatusRunning, m.o.now(), cancel, nil
	j.transitions = append(j.transitions, store.Transition{Status: api.StatusRunning, At: j.started})
	j.mu.Unlock()
	m.saveLogged(j)

	log := m.o.logger.With("job", j.ID, "owner", j.Owner)
	log.Info("build started", "runner", j.Spec.Runner)
	wctx, stopWatch := context.WithCancel(jctx)
	peak := make(chan int64, 1)
	del := m.deletedFiles(j)
	go func() { peak <- m.watchDisk(wctx, j, del, cancel) }()
	digest, err := m.build(jctx, j)
	stopWatch()
	wsPeak := <-peak
	if err != nil && jctx.Err() == nil {
		// The kernel stopped a writer (ENOSPC) before the watcher did:
		// say so rather than how the runner failed.
		if de := m.diskCause(j, wsPeak, del); de != nil {
			j.Log.Printf("%s", err)
			cancel(de)
		}
	}
	var diskErr *DiskError
	var status api.Status
	var msg string
	switch {
	case err == nil:
		status = api.StatusSucceeded
		j.Log.Printf("pushed %s", digest)
	case errors.Is(context.Cause(jctx), errCancelled):
		status, msg = api.StatusCancelled, "cancelled"
		j.Log.Printf("cancelled")
	case errors.Is(context.Cause(jctx), errTimeout):
		status, msg = api.StatusFailed, fmt.Sprintf("timeout: the build ran longer than %s", timeout)
		j.Log.Printf("%s", msg)
	case errors.As(context.Cause(jctx), &diskErr):
		status, msg = api.StatusFailed, diskErr.Error()
		j.Log.Printf("failed: %s", msg)
	case errors.Is(context.Cause(jctx), errShutdown):
		// Interrupted, not cancelled: its client may submit it again, as
		// after a crash (api.Build.Interrupted).
		status, msg = api.StatusFailed, fmt.Sprintf("%s: the gateway shut down and the build did not finish within the %s grace period", ErrRestarted, m.o.shutdownGrace)
		j.Log.Printf("%s", msg)
	default:
		status, msg = api.StatusFailed, err.Error()
		j.Log.Printf("failed: %v", err)
	}
	if status != api.StatusSucceeded {
		digest = ""
	}
	if m.shared != nil {
		// Taken over by another replica, or stopped by this one's
		// shutdown: the build does not end here.
		cause := context.Cause(jctx)
		if errors.Is(cause, errLost) || errors.Is(cause, errShutdown) {
			m.removeWorkspace(context.WithoutCancel(ctx), j.Spec.Runner, j.workspace)
			release()
			if errors.Is(cause, errShutdown) {
				m.releaseHeld(j, "the gateway shut down before the build finished; queued again for another replica")
			} else {
				j.Log.Close()
			}
			log.Info("build left this replica", "reason", cause.Error())
			return
		}
	}
	// Clean up before reporting the final state, so that whoever waits for
	// it finds the workspace gone and the log complete.
	m.removeWorkspace(context.WithoutCancel(ctx), j.Spec.Runner, j.workspace)
	release()
	j.finish(status, digest, msg, m.o.now(), m.finished(j))
	j.Log.Close()
	m.saveLogged(j)
	b := j.Snapshot()
	m.mu.Lock()
	m.meanBuild = (m.meanBuild*7 + b.FinishedAt.Sub(*b.StartedAt)) / 8
	m.mu.Unlock()
	log.Info("build finished", "status", b.Status, "digest", b.Digest, "error", b.Error,
		"duration", b.FinishedAt.Sub(*b.StartedAt).String(), "workspace_peak_bytes", wsPeak)
}

var errTimeout = errors.New("timeout")

func (m *Manager) build(ctx context.Context, j *Job) (string, error) {
	if m.shared != nil {
		if err := m.fetchContext(ctx, j); err != nil {
			return "", err
		}
	}
	runner := m.o.runners[j.Spec.Runner]
	out := filepath.Join(j.workspace, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		return "", fmt.Errorf("creating output directory: %w", err)
	}
	if err := m.chown(out); err != nil {
		return "", err
	}
	analysis, err := j.analysisForBuild(runner)
	if err != nil {
		return "", err
	}
	req := &builder.Request{
		ID:                 j.ID,
		Workspace:          j.workspace,
		ContextDir:         filepath.Join(j.workspace, "context"),
		Dockerfile:         j.Spec.Dockerfile,
		Analysis:           analysis,
		BuildArgs:          j.Spec.BuildArgs,
		Target:             j.Spec.Target,
		Labels:             j.Spec.Labels,
		OutputDir:          out,
		InsecureRegistries: m.o.insecure,
		ExtraCAs:           m.o.extraCAs,
		Network:            j.Grant.Network,
		Tenant:             j.Tenant(),
		NoCache:            j.Spec.NoCache,
	}
	if f := m.o.baseCheck; f != nil {
		req.CheckBase = func(image string, onbuild []string) error {
			return f(j.Identity, j.Spec, analysis, image, onbuild)
		}
	}
	if m.o.bases != nil {
		b, err := m.o.bases.Prepare(ctx, req, j.Log)
		if err != nil {
			return "", fmt.Errorf("fetching base images: %w", err)
		}
		req.BaseImages = b
		j.setBaseImages(b.Images)
		m.saveLogged(j)
	}
	img, err := runner.Build(ctx, req, j.Log)
	if err != nil {
		return "", err
	}
	return m.push(ctx, j, img, req.BaseImages)
}

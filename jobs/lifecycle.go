package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// reserve takes a queue slot for a submission of tenant (limitKey) before
// its context is read, or refuses it when the queue is full. An upload in
// progress holds its slot, so it counts against every bound, and against
// the tenant's bound on uploads.
func (m *Manager) reserve(tenant string) error {
	// With a shared queue, what waits there counts too.
	var shared, sharedTenant int
	if m.shared != nil {
		ctx, cancel := storeCtx()
		defer cancel()
		var err error
		if shared, sharedTenant, err = m.shared.Queued(ctx, tenant); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.o.maxQueued; l > 0 && shared+m.queue.len()+m.pending >= l {
		return &QueueFullError{Limit: l, RetryAfter: m.retryAfter()}
	}
	if l := m.o.maxUploadOwner; l > 0 && m.pendingBy[tenant] >= l {
		return &QueueFullError{Limit: l, PerOwner: true, Uploading: true, RetryAfter: m.retryAfter()}
	}
	if l := m.o.maxQueuedOwner; l > 0 && sharedTenant+m.queue.tenantLen(tenant)+m.pendingBy[tenant] >= l {
		return &QueueFullError{Limit: l, PerOwner: true, RetryAfter: m.retryAfter()}
	}
	m.pending++
	m.pendingBy[tenant]++
	return nil
}

// release gives back a slot that reserve took for a submission that was
// not queued after all.
func (m *Manager) release(tenant string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending--
	if m.pendingBy[tenant]--; m.pendingBy[tenant] <= 0 {
		delete(m.pendingBy, tenant)
	}
}

// retryAfter estimates when a slot frees up: the time the queue ahead
// takes to drain through the workers, between 1s and 1m. m.mu is held.
func (m *Manager) retryAfter() time.Duration {
	rounds := (m.queue.len() + m.o.concurrency - 1) / m.o.concurrency
	d := time.Duration(max(rounds, 1)) * m.meanBuild
	return min(max(d.Round(time.Second), time.Second), time.Minute)
}

// mayStart reports whether j's tenant may run one more build. m.mu is held.
func (m *Manager) mayStart(j *Job) bool {
	limit := m.o.ownerConcurrency
	if g := j.Grant.MaxConcurrent; g > 0 && (limit == 0 || g < limit) {
		limit = g
	}
	return limit == 0 || m.runningBy[j.limitKey()] < limit
}

// save writes j's current state to the store.
func (m *Manager) save(j *Job) error {
	j.saveMu.Lock()
	defer j.saveMu.Unlock()
	if m.shared != nil {
		return m.saveHeld(j)
	}
	return m.store.Put(j.record())
}

// saveLogged saves j where a failure cannot stop the transition (the job
// has already moved on); readiness reports a store that cannot be written.
func (m *Manager) saveLogged(j *Job) {
	if err := m.save(j); err != nil {
		m.o.logger.Error("recording build state", "job", j.ID, "error", err)
	}
}

// ReadyError is why the gateway cannot take builds. Check names what
// failed, "store" or "disk", and may be shown to anyone; Err names paths
// and sizes, for the gateway's own log.
type ReadyError struct {
	Check string
	Err   error
}

func (e *ReadyError) Error() string { return e.Err.Error() }
func (e *ReadyError) Unwrap() error { return e.Err }

var _ error = (*ReadyError)(nil)

// Ready reports why the gateway cannot take builds, as a *ReadyError: a
// job store that cannot be written, or too little free space in the
// state directory.
func (m *Manager) Ready() error {
	if err := m.store.Ping(); err != nil {
		return &ReadyError{Check: "store", Err: err}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.layout.Root, &st); err != nil {
		return &ReadyError{Check: "disk", Err: fmt.Errorf("checking free space of %s: %w", m.layout.Root, err)}
	}
	if free := st.Bavail * uint64(st.Bsize); free < m.o.minFreeBytes {
		return &ReadyError{Check: "disk", Err: fmt.Errorf("state directory has %d MiB free, below the %d MiB minimum", free>>20, m.o.minFreeBytes>>20)}
	}
	return nil
}

// janitor removes finished builds older than the retention period, their
// records and logs, until ctx ends.
func (m *Manager) janitor(ctx context.Context) {
	every := min(m.o.retention/4, 10*time.Minute)
	t := time.NewTicker(max(every, time.Second))
	defer t.Stop()
	for {
		m.expire()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// expire forgets finished builds that ended before the retention period.
func (m *Manager) expire() {
	cutoff := m.o.now().Add(-m.o.retention)
	if m.shared != nil {
		ctx, cancel := storeCtx()
		defer cancel()
		n, err := m.shared.Expire(ctx, cutoff)
		if err != nil {
			m.o.logger.Error("expiring finished builds", "error", err)
		} else if n > 0 {
			m.o.logger.Info("expired finished builds", "count", n, "retention", m.o.retention.String())
		}
		return
	}
	var old []*Job
	m.mu.Lock()
	for _, j := range m.jobs {
		j.mu.Lock()
		if j.status.Final() && j.finished.Before(cutoff) {
			old = append(old, j)
		}
		j.mu.Unlock()
	}
	m.mu.Unlock()
	if len(old) == 0 {
		return
	}
	ids := make([]string, len(old))
	for i, j := range old {
		ids[i] = j.ID
	}
	if err := m.store.Delete(ids...); err != nil {
		m.o.logger.Error("expiring finished builds", "error", err)
		return
	}
	m.mu.Lock()
	for _, j := range old {
		delete(m.jobs, j.ID)
		m.forget(j)
	}
	m.mu.Unlock()
	for _, j := range old {
		if err := os.Remove(j.Log.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.o.logger.Error("removing expired log", "job", j.ID, "error", err)
		}
	}
	m.o.logger.Info("expired finished builds", "count", len(old), "retention", m.o.retention.String())
}

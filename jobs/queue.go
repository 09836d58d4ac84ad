package jobs

import (
	"fmt"
	"slices"
	"time"
)

// fairQueue holds waiting jobs in one FIFO per tenant (Job.limitKey: the
// policy's tenant, else the owner) and hands them out round-robin between
// tenants, so that one tenant flooding the gateway, from any number of
// identities, delays its own builds, not everyone's. It is guarded by
// Manager.mu.
type fairQueue struct {
	byTenant map[string][]*Job
	tenants  []string // tenants with waiting jobs, in round-robin order
	next     int      // index in tenants of the tenant whose turn it is
	n        int
}

func newFairQueue() *fairQueue { return &fairQueue{byTenant: map[string][]*Job{}} }

func (q *fairQueue) len() int { return q.n }

func (q *fairQueue) tenantLen(tenant string) int { return len(q.byTenant[tenant]) }

func (q *fairQueue) push(j *Job) {
	if len(q.byTenant[j.limitKey()]) == 0 {
		// A newcomer queues behind the tenant whose turn it is, so it
		// cannot jump ahead of tenants that have waited a full round.
		q.tenants = slices.Insert(q.tenants, q.next, j.limitKey())
		q.next++
		if q.next >= len(q.tenants) {
			q.next = 0
		}
	}
	q.byTenant[j.limitKey()] = append(q.byTenant[j.limitKey()], j)
	q.n++
}

// pop takes the oldest job of the first tenant, in turn, whose job may
// start, and moves the turn to the tenant after it.
func (q *fairQueue) pop(mayStart func(*Job) bool) *Job {
	for i := range q.tenants {
		idx := (q.next + i) % len(q.tenants)
		tenant := q.tenants[idx]
		j := q.byTenant[tenant][0]
		if !mayStart(j) {
			continue
		}
		q.byTenant[tenant] = q.byTenant[tenant][1:]
		q.n--
		if len(q.byTenant[tenant]) == 0 {
			delete(q.byTenant, tenant)
			q.tenants = slices.Delete(q.tenants, idx, idx+1)
			q.next = idx // the tenant after it moved into its place
		} else {
			q.next = idx + 1
		}
		if q.next >= len(q.tenants) {
			q.next = 0
		}
		return j
	}
	return nil
}

// remove takes j out of the queue and reports whether it was there.
func (q *fairQueue) remove(j *Job) bool {
	jobs := q.byTenant[j.limitKey()]
	i := slices.Index(jobs, j)
	if i < 0 {
		return false
	}
	q.byTenant[j.limitKey()] = slices.Delete(jobs, i, i+1)
	q.n--
	if len(q.byTenant[j.limitKey()]) == 0 {
		delete(q.byTenant, j.limitKey())
		idx := slices.Index(q.tenants, j.limitKey())
		q.tenants = slices.Delete(q.tenants, idx, idx+1)
		if idx < q.next {
			q.next--
		}
		if q.next >= len(q.tenants) {
			q.next = 0
		}
	}
	return true
}

// QueueFullError refuses a submission because too many builds wait. The
// HTTP layer answers it with 429 and Retry-After.
type QueueFullError struct {
	// Limit is the bound that was reached.
	Limit int
	// PerOwner is set when it is the bound of the caller's tenant (its
	// own, without one), not the gateway's.
	PerOwner bool
	// Uploading is set when the bound is on the caller's uploads in
	// progress (WithMaxUploading).
	Uploading bool
	// RetryAfter is when trying again is likely to succeed.
	RetryAfter time.Duration
}

func (e *QueueFullError) Error() string {
	// The messages name the gateway settings (queue.*) that set the bound.
	switch {
	case e.Uploading:
		return fmt.Sprintf("too many uploads: this identity, with the others of its policy tenant, already has %d uploads in progress (max_uploading_per_identity); retry after %s", e.Limit, e.RetryAfter)
	case e.PerOwner:
		return fmt.Sprintf("queue full: this identity, with the others of its policy tenant, already has %d builds waiting or uploading (max_queued_per_identity); retry after %s", e.Limit, e.RetryAfter)
	}
	return fmt.Sprintf("queue full: %d builds are waiting or uploading (max_queued); retry after %s", e.Limit, e.RetryAfter)
}

var _ error = (*QueueFullError)(nil)

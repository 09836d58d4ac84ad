package jobs

import (
	"fmt"
	"slices"
	"time"
)

// fairQueue holds waiting jobs in one FIFO per owner and hands them out
// round-robin between owners, so that one owner flooding the gateway
// delays its own builds, not everyone's. It is guarded by Manager.mu.
type fairQueue struct {
	byOwner map[string][]*Job
	owners  []string // owners with waiting jobs, in round-robin order
	next    int      // index in owners of the owner whose turn it is
	n       int
}

func newFairQueue() *fairQueue { return &fairQueue{byOwner: map[string][]*Job{}} }

func (q *fairQueue) len() int { return q.n }

func (q *fairQueue) ownerLen(owner string) int { return len(q.byOwner[owner]) }

func (q *fairQueue) push(j *Job) {
	if len(q.byOwner[j.Owner]) == 0 {
		// A newcomer queues behind the owner whose turn it is, so it cannot
		// jump ahead of owners that have waited a full round.
		q.owners = slices.Insert(q.owners, q.next, j.Owner)
		q.next++
		if q.next >= len(q.owners) {
			q.next = 0
		}
	}
	q.byOwner[j.Owner] = append(q.byOwner[j.Owner], j)
	q.n++
}

// pop takes the oldest job of the first owner, in turn, whose job may
// start, and moves the turn to the owner after it.
func (q *fairQueue) pop(mayStart func(*Job) bool) *Job {
	for i := range q.owners {
		idx := (q.next + i) % len(q.owners)
		owner := q.owners[idx]
		j := q.byOwner[owner][0]
		if !mayStart(j) {
			continue
		}
		q.byOwner[owner] = q.byOwner[owner][1:]
		q.n--
		if len(q.byOwner[owner]) == 0 {
			delete(q.byOwner, owner)
			q.owners = slices.Delete(q.owners, idx, idx+1)
			q.next = idx // the owner after it moved into its place
		} else {
			q.next = idx + 1
		}
		if q.next >= len(q.owners) {
			q.next = 0
		}
		return j
	}
	return nil
}

// remove takes j out of the queue and reports whether it was there.
func (q *fairQueue) remove(j *Job) bool {
	jobs := q.byOwner[j.Owner]
	i := slices.Index(jobs, j)
	if i < 0 {
		return false
	}
	q.byOwner[j.Owner] = slices.Delete(jobs, i, i+1)
	q.n--
	if len(q.byOwner[j.Owner]) == 0 {
		delete(q.byOwner, j.Owner)
		idx := slices.Index(q.owners, j.Owner)
		q.owners = slices.Delete(q.owners, idx, idx+1)
		if idx < q.next {
			q.next--
		}
		if q.next >= len(q.owners) {
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
	// PerOwner is set when it is the caller's own bound, not the
	// gateway's.
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
		return fmt.Sprintf("too many uploads: this identity already has %d uploads in progress (max_uploading_per_identity); retry after %s", e.Limit, e.RetryAfter)
	case e.PerOwner:
		return fmt.Sprintf("queue full: this identity already has %d builds waiting or uploading (max_queued_per_identity); retry after %s", e.Limit, e.RetryAfter)
	}
	return fmt.Sprintf("queue full: %d builds are waiting or uploading (max_queued); retry after %s", e.Limit, e.RetryAfter)
}

var _ error = (*QueueFullError)(nil)

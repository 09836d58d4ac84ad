package jobs

import "context"

// idempotencyKey identifies a submission made with an Idempotency-Key:
// a client's key counts per owner, so the same key from another owner is
// another submission.
type idempotencyKey struct {
	owner string
	key   string // the client's Idempotency-Key
}

// idemEntry is the submission made under an idempotency key: in flight
// until done is closed, then its job.
type idemEntry struct {
	done chan struct{}
	job  *Job // nil if the first attempt failed
}

// idempotency returns the key j was submitted with; ok is false if none.
func (j *Job) idempotency() (k idempotencyKey, ok bool) {
	return idempotencyKey{owner: j.Owner, key: j.idemKey}, j.idemKey != ""
}

// once runs accept for the first submission under k. A repeated one (a
// client retry, possibly racing its first attempt) gets the first one's
// job instead of building twice, waiting for it while it is in flight. A
// failed attempt leaves nothing behind, so that a retry tries again.
func (m *Manager) once(ctx context.Context, k idempotencyKey, accept func() (*Job, error)) (*Job, error) {
	for {
		m.mu.Lock()
		e, ok := m.idem[k]
		if !ok {
			e = &idemEntry{done: make(chan struct{})}
			m.idem[k] = e
			m.mu.Unlock()
			job, err := accept()
			m.mu.Lock()
			e.job = job
			if err != nil {
				delete(m.idem, k) // let a retry try again
			}
			close(e.done)
			m.mu.Unlock()
			return job, err
		}
		m.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.job != nil {
			return e.job, nil
		}
	}
}

// remember records j, a job known from the store, under its idempotency
// key, if it has one. m.mu is held or the Manager not yet shared.
func (m *Manager) remember(j *Job) {
	if k, ok := j.idempotency(); ok {
		e := &idemEntry{done: make(chan struct{}), job: j}
		close(e.done)
		m.idem[k] = e
	}
}

// forget drops j's idempotency key, when j itself is forgotten. m.mu is
// held.
func (m *Manager) forget(j *Job) {
	if k, ok := j.idempotency(); ok {
		delete(m.idem, k)
	}
}

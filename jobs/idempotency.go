package jobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/buildgw/buildgw/jobs/store"
)

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
// job instead of building twice, waiting for it while it is in flight,
// and readToken (if not zero) becomes that job's read token. A failed
// attempt leaves nothing behind, so that a retry tries again. A job a
// restart interrupted will not resume: the same submission sent again
// starts a new one.
func (m *Manager) once(ctx context.Context, k idempotencyKey, readToken [sha256.Size]byte, accept func() (*Job, error)) (*Job, error) {
	if m.shared != nil {
		return m.sharedOnce(ctx, k, readToken, accept)
	}
	for {
		m.mu.Lock()
		e, ok := m.idem[k]
		if ok && e.job != nil && e.job.interrupted() {
			ok = false
		}
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
			if readToken != ([sha256.Size]byte{}) {
				if err := m.setReadToken(e.job, readToken); err != nil {
					return nil, err
				}
			}
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

// forget drops j's idempotency key, when j itself is forgotten, unless
// the key names a newer build by now (sent again after a restart
// interrupted j). m.mu is held.
func (m *Manager) forget(j *Job) {
	if k, ok := j.idempotency(); ok {
		if e := m.idem[k]; e != nil && e.job == j {
			delete(m.idem, k)
		}
	}
}

// sharedOnce is once with a shared store: the key is looked up there,
// since the first attempt may have gone to another replica; concurrent
// attempts on this replica still wait for each other.
func (m *Manager) sharedOnce(ctx context.Context, k idempotencyKey, readToken [sha256.Size]byte, accept func() (*Job, error)) (*Job, error) {
	for {
		m.mu.Lock()
		e, ok := m.idem[k]
		if !ok {
			e = &idemEntry{done: make(chan struct{})}
			m.idem[k] = e
		}
		m.mu.Unlock()
		if ok {
			select {
			case <-e.done:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		j, err := m.sharedFirst(k, readToken)
		if err == nil && j == nil {
			j, err = accept()
			// Another replica took the same submission and stored it
			// first: that build is this submission's.
			var dup *store.DuplicateError
			if errors.As(err, &dup) {
				if j, err = m.sharedFirst(k, readToken); err == nil && j == nil {
					err = fmt.Errorf("accepting build: %w", dup)
				}
			}
		}
		m.mu.Lock()
		delete(m.idem, k)
		close(e.done)
		m.mu.Unlock()
		return j, err
	}
}

// sharedFirst returns the build the shared store holds for k, with
// readToken (if not zero) as its read token, unless a restart
// interrupted it; nil if there is none.
func (m *Manager) sharedFirst(k idempotencyKey, readToken [sha256.Size]byte) (*Job, error) {
	id, err := m.store.Idempotent(k.owner, k.key)
	if err != nil || id == "" {
		return nil, err
	}
	j, err := m.sharedGet(k.owner, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil || j.interrupted() {
		return nil, err
	}
	if readToken != ([sha256.Size]byte{}) {
		if err := m.setReadToken(j, readToken); err != nil {
			return nil, err
		}
	}
	return j, nil
}

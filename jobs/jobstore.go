package jobs

import (
	"errors"
	"io"

	"github.com/buildgw/buildgw/jobs/store"
)

// Store keeps the Manager's job records: every accepted build, its
// transitions and its outcome, so that they survive the gateway. The
// embedded bbolt store (jobs/store) keeps them for one gateway; the
// PostgreSQL one (jobs/pgstore) for replicas that share a queue.
//
// Its methods take no context: a state write must complete even when the
// request that caused it has gone (accepted means recorded), so an
// implementation that talks to a server bounds each call itself.
type Store interface {
	// Put writes r whole, and its idempotency key if it has one.
	Put(r *store.Record) error
	// Get returns the record id, or an error wrapping store.ErrNotFound.
	Get(id string) (*store.Record, error)
	// All returns every record.
	All() ([]*store.Record, error)
	// Delete removes the records ids, and their idempotency keys unless a
	// key names another build by now.
	Delete(ids ...string) error
	// Idempotent returns the build stored for owner's idempotency key, or
	// "" if none is.
	Idempotent(owner, key string) (string, error)
	// Ping fails when the store cannot be written, for readiness.
	Ping() error
	Close() error
}

var _ Store = (*store.Store)(nil)

// backuper is a Store the gateway itself can copy while builds go on.
type backuper interface {
	Backup(w io.Writer, size func(int64)) (int64, error)
}

// errNoBackup is BackupStore's answer for a store the gateway cannot copy.
var errNoBackup = errors.New("this job store is not a file the gateway can copy: back up its database with the database's own tools")

// WithStore keeps job records in s instead of the embedded store in the
// state directory; the Manager closes it. Default: jobs/store in the
// layout's JobStore file.
func WithStore(s Store) Option {
	return func(o *options) error {
		if s == nil {
			return errors.New("nil job store")
		}
		o.store = s
		return nil
	}
}

// Package store keeps the gateway's job records in an embedded bbolt
// database, so that every accepted build, its state transitions and its
// outcome survive a restart of the gateway. The schema is versioned in
// code: Open migrates an older file forward and refuses a newer one.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
)

// ErrNotFound is returned for an ID the store does not hold.
var ErrNotFound = errors.New("no such job record")

// Transition is one change of a job's state.
type Transition struct {
	Status api.Status `json:"status"`
	At     time.Time  `json:"at"`
	// Reason says why, for the final transitions that are not success.
	Reason string `json:"reason,omitempty"`
}

// Record is everything the gateway keeps about one accepted build.
type Record struct {
	ID       string        `json:"id"`
	Owner    string        `json:"owner"`
	Identity auth.Identity `json:"identity"`
	Spec     api.BuildSpec `json:"spec"`
	// Grant is the authorization's grant, opaque to the store.
	Grant            json.RawMessage `json:"grant,omitempty"`
	ContextSHA256    string          `json:"context_sha256"`
	DockerfileSHA256 string          `json:"dockerfile_sha256"`
	IdempotencyKey   string          `json:"idempotency_key,omitempty"`

	Status     api.Status `json:"status"`
	Digest     string     `json:"digest,omitempty"`
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  time.Time  `json:"started_at,omitzero"`
	FinishedAt time.Time  `json:"finished_at,omitzero"`
	// Transitions are the states the job went through, oldest first.
	Transitions []Transition `json:"transitions"`
	// BaseImages are what the build started from, once resolved.
	BaseImages []api.BaseImage `json:"base_images,omitempty"`

	// LogPath is the job's log file; Workspace its directory while it
	// lives.
	LogPath   string `json:"log_path"`
	Workspace string `json:"workspace"`
}

var (
	bucketMeta = []byte("meta")
	bucketJobs = []byte("jobs")
	bucketIdem = []byte("idempotency")
	keySchema  = []byte("schema_version")
	keyPing    = []byte("ping")
)

// migrations bring a database from version i to i+1. Append only: a
// released migration never changes.
var migrations = []func(tx *bolt.Tx) error{
	// 0 → 1: jobs by ID, idempotency keys by owner and key.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketIdem} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
}

// SchemaVersion is the version Open migrates to.
func SchemaVersion() int { return len(migrations) }

// Store is an open job database. Its methods are safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating it if needed) the database at path and migrates it
// to the current schema. A database held by another running gateway is an
// error after a few seconds, not a hang.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("opening job store %s: held by another process (is another gateway using this state directory?)", path)
		}
		return nil, fmt.Errorf("opening job store %s: %w", path, err)
	}
	// Transitions of concurrent jobs share one commit and one fsync.
	db.MaxBatchDelay = 2 * time.Millisecond
	s := &Store{db: db, path: path}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := 0
		if b := meta.Get(keySchema); b != nil {
			if _, err := fmt.Sscan(string(b), &v); err != nil {
				return fmt.Errorf("job store %s: bad schema version %q", s.path, b)
			}
		}
		if v > len(migrations) {
			return fmt.Errorf("job store %s has schema version %d, newer than this gateway's %d", s.path, v, len(migrations))
		}
		for ; v < len(migrations); v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrating job store to version %d: %w", v+1, err)
			}
		}
		return meta.Put(keySchema, []byte(fmt.Sprint(v)))
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Put writes r whole, and its idempotency key if it has one.
func (s *Store) Put(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding job %s: %w", r.ID, err)
	}
	err = s.db.Batch(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketJobs).Put([]byte(r.ID), b); err != nil {
			return err
		}
		if r.IdempotencyKey != "" {
			return tx.Bucket(bucketIdem).Put(idemKey(r.Owner, r.IdempotencyKey), []byte(r.ID))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing job %s: %w", r.ID, err)
	}
	return nil
}

// Update applies f to the stored record id and writes it back.
func (s *Store) Update(id string, f func(r *Record)) error {
	err := s.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketJobs)
		b := bk.Get([]byte(id))
		if b == nil {
			return ErrNotFound
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		f(&r)
		nb, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		return bk.Put([]byte(id), nb)
	})
	if err != nil {
		return fmt.Errorf("updating job %s: %w", id, err)
	}
	return nil
}

// Get returns the record id.
func (s *Store) Get(id string) (*Record, error) {
	var r *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs).Get([]byte(id))
		if b == nil {
			return ErrNotFound
		}
		r = &Record{}
		return json.Unmarshal(b, r)
	})
	if err != nil {
		return nil, fmt.Errorf("reading job %s: %w", id, err)
	}
	return r, nil
}

// All returns every record. A record that cannot be decoded is an error:
// the gateway must not start with builds it cannot account for.
func (s *Store) All() ([]*Record, error) {
	var out []*Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decoding job %s: %w", k, err)
			}
			out = append(out, &r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading job store: %w", err)
	}
	return out, nil
}

// Delete removes the records ids and their idempotency keys.
func (s *Store) Delete(ids ...string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		jobs, idem := tx.Bucket(bucketJobs), tx.Bucket(bucketIdem)
		for _, id := range ids {
			if b := jobs.Get([]byte(id)); b != nil {
				var r Record
				if json.Unmarshal(b, &r) == nil && r.IdempotencyKey != "" {
					if err := idem.Delete(idemKey(r.Owner, r.IdempotencyKey)); err != nil {
						return err
					}
				}
			}
			if err := jobs.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting job records: %w", err)
	}
	return nil
}

// Idempotent returns the job ID stored for owner's idempotency key, or
// "" if none is.
func (s *Store) Idempotent(owner, key string) (string, error) {
	var id string
	err := s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketIdem).Get(idemKey(owner, key)))
		return nil
	})
	return id, err
}

// Ping writes to the database, for readiness checks: a full disk or a
// read-only file system makes it fail.
func (s *Store) Ping() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyPing, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("writing job store: %w", err)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

func idemKey(owner, key string) []byte { return []byte(owner + "\x00" + key) }

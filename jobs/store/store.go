// Package store keeps the gateway's job records in an embedded bbolt
// database, so that every accepted build, its state transitions and its
// outcome survive a restart of the gateway. The schema is versioned in
// code: Open migrates an older file forward and refuses a newer one.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
)

// ErrNotFound is returned for an ID the store does not hold.
var ErrNotFound = errors.New("no such job record")

// ErrNotHeld is returned by a store that replicas share for a write by a
// replica that no longer holds the build: its lease expired and the
// build was queued again.
var ErrNotHeld = errors.New("build no longer held by this replica")

// ErrLeaseLost is returned by a store that replicas share when a
// replica's lease is gone: another replica found it expired and took its
// builds.
var ErrLeaseLost = errors.New("replica lease lost")

// DuplicateError is returned by a store that replicas share when a build
// is created under an idempotency key that already names a live build,
// accepted meanwhile by another replica: the submission is that build.
type DuplicateError struct{ ID string }

func (e *DuplicateError) Error() string {
	return "idempotency key already names build " + e.ID
}

// Transition is one change of a job's state.
type Transition struct {
	Status api.Status `json:"status"`
	At     time.Time  `json:"at"`
	// Reason says why, for the final transitions that are not success.
	Reason string `json:"reason,omitempty"`
}

// Record is everything the gateway keeps about one accepted build.
type Record struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	// LimitTenant is whose limits and queue turns the build counts against;
	// records written before tenants existed have none, which means the
	// owner.
	LimitTenant string        `json:"tenant,omitempty"`
	Identity    auth.Identity `json:"identity"`
	Spec        api.BuildSpec `json:"spec"`
	// Grant is the authorization's grant, opaque to the store.
	Grant            json.RawMessage `json:"grant,omitempty"`
	ContextSHA256    string          `json:"context_sha256"`
	DockerfileSHA256 string          `json:"dockerfile_sha256"`
	IdempotencyKey   string          `json:"idempotency_key,omitempty"`
	// ReadTokenSHA256 is the hex sha256 of the build's read token (never
	// the token). Records written before read tokens existed have none,
	// and no read token opens them.
	ReadTokenSHA256 string `json:"read_token_sha256,omitempty"`

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

// Open opens (creating it if needed) the database at path, checks it
// whole and migrates it to the current schema. A database held by another
// running gateway is an error after a few seconds, not a hang; a damaged
// one is an error (a *DamagedError) that says what to do, not a panic.
func Open(path string) (*Store, error) {
	return open(path, &bolt.Options{Timeout: 5 * time.Second})
}

// OpenReadOnly opens the database at path for reading only, for a backup
// while no gateway holds it.
func OpenReadOnly(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("opening job store: %w", err)
	}
	return open(path, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
}

func open(path string, opts *bolt.Options) (_ *Store, err error) {
	// bbolt panics on some damage (a bad freelist or page header) instead
	// of answering an error.
	defer func() {
		if r := recover(); r != nil {
			err = &DamagedError{Path: path, Damage: fmt.Sprint(r)}
		}
	}()
	if err := checkSize(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("opening job store %s: held by another process (is another gateway using this state directory?)", path)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
			return nil, &DamagedError{Path: path, Damage: err.Error()}
		}
		return nil, fmt.Errorf("opening job store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	defer func() {
		if err != nil {
			// Closing a damaged database may panic in turn.
			func() { defer func() { _ = recover() }(); db.Close() }()
		}
	}()
	if err := s.check(); err != nil {
		return nil, err
	}
	if opts.ReadOnly {
		return s, nil
	}
	// Transitions of concurrent jobs share one commit and one fsync.
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := s.migrate(); err != nil {
		return nil, err
	}
	return s, nil
}

// check walks every page of the database, so that damage shows at start-up
// and not as a panic in the middle of a build.
func (s *Store) check() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &DamagedError{Path: s.path, Damage: fmt.Sprint(r)}
		}
	}()
	return s.db.View(func(tx *bolt.Tx) error {
		// bbolt's Check reads pages in a goroutine of its own, where a
		// panic on a bad page cannot be recovered: read every page here
		// first.
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) }); err != nil {
			return err
		}
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		if len(errs) > 0 {
			return &DamagedError{Path: s.path, Damage: errors.Join(errs...).Error()}
		}
		return nil
	})
}

// checkSize refuses a file shorter than its newest meta page says it is:
// bbolt maps the missing pages and dies of SIGBUS reading them, which no
// recover catches. A file that does not exist or is empty is new.
func checkSize(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening job store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil // bbolt says what is wrong, or makes a new database
	}
	// A meta page: the page header (16 bytes), then magic, version and
	// page size (uint32 each), flags, the root bucket (16), the freelist
	// page, the page count and the transaction ID (uint64 each).
	meta := func(off int64) (pgid, txid uint64, pageSize uint32, ok bool) {
		b := make([]byte, 72)
		if _, err := f.ReadAt(b, off); err != nil {
			return 0, 0, 0, false
		}
		le := binary.LittleEndian
		if le.Uint32(b[16:]) != 0xED0CDAED || le.Uint32(b[20:]) != 2 {
			return 0, 0, 0, false
		}
		return le.Uint64(b[56:]), le.Uint64(b[64:]), le.Uint32(b[24:]), true
	}
	pgid, txid, ps, ok := meta(0)
	if !ok {
		return nil // bbolt tells a bad first meta page
	}
	if p1, t1, ps1, ok1 := meta(int64(ps)); ok1 && t1 > txid {
		pgid, ps = p1, ps1
	}
	if need := int64(pgid) * int64(ps); fi.Size() < need {
		return &DamagedError{Path: path, Damage: fmt.Sprintf("truncated: the file has %d bytes, its last transaction needs %d", fi.Size(), need)}
	}
	return nil
}

// walk reads every key of b and its nested buckets.
func walk(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walk(nb)
			}
		}
		return nil
	})
}

// DamagedError is a job store that bbolt cannot read safely.
type DamagedError struct {
	Path   string
	Damage string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("job store %s is damaged (%s): stop the gateway and restore the file from a backup (buildgw backup), "+
		"or move it aside and start with --accept-empty-store to begin an empty one (the builds it recorded are then forgotten)", e.Path, e.Damage)
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
				// The key may name a newer build by now (a submission
				// sent again after a restart interrupted this one).
				if json.Unmarshal(b, &r) == nil && r.IdempotencyKey != "" && string(idem.Get(idemKey(r.Owner, r.IdempotencyKey))) == id {
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

// Backup writes a consistent copy of the database to w while other
// transactions go on, and returns the bytes written. size, if not nil, is
// told the copy's size before it is written.
func (s *Store) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("copying job store %s: %w", s.path, err)
	}
	return n, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

func idemKey(owner, key string) []byte { return []byte(owner + "\x00" + key) }

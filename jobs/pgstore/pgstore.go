// Package pgstore keeps the gateway's job records in PostgreSQL, so that
// gateway replicas sharing one database serve one queue
// (docs/replication.md). Besides the records it holds what replicas
// share: their leases, the queue's claims, the accepted contexts and the
// build logs. The schema is versioned in code: Open migrates an older
// database forward and refuses a newer one.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/buildgw/buildgw/jobs/store"
)

// migrations bring a database from version i to i+1. Append only: a
// released migration never changes.
var migrations = []string{
	// 0 → 1: records, idempotency keys, replicas and their claims,
	// contexts and logs.
	`CREATE TABLE jobs (
		id text PRIMARY KEY,
		owner text NOT NULL,
		status text NOT NULL,
		replica text,
		attempt integer NOT NULL DEFAULT 0,
		cancel_requested boolean NOT NULL DEFAULT false,
		created_at timestamptz NOT NULL,
		finished_at timestamptz,
		record jsonb NOT NULL
	);
	CREATE INDEX jobs_queue ON jobs (created_at) WHERE status = 'queued' AND replica IS NULL;
	CREATE INDEX jobs_replica ON jobs (replica) WHERE replica IS NOT NULL;
	CREATE INDEX jobs_owner ON jobs (owner, created_at);
	CREATE TABLE idempotency (
		owner text NOT NULL,
		key text NOT NULL,
		id text NOT NULL,
		PRIMARY KEY (owner, key)
	);
	CREATE TABLE replicas (
		id text PRIMARY KEY,
		started_at timestamptz NOT NULL DEFAULT now(),
		lease_until timestamptz NOT NULL
	);
	CREATE TABLE contexts (
		id text NOT NULL REFERENCES jobs ON DELETE CASCADE,
		seq integer NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (id, seq)
	);
	CREATE TABLE logs (
		id text NOT NULL REFERENCES jobs ON DELETE CASCADE,
		seq integer NOT NULL,
		off bigint NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (id, seq)
	);`,
}

// SchemaVersion is the version Open migrates to.
func SchemaVersion() int { return len(migrations) }

// migrationLock is the advisory lock that keeps replicas starting at once
// from migrating together.
const migrationLock = 0x62676d69677261 // "bgmigra"

// Store is an open job database. Its methods are safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	timeout time.Duration
}

// Open connects to the database of dsn and migrates it to the current
// schema. Errors never quote dsn: it may hold a password. The pool holds
// up to 10 connections unless dsn sets pool_max_conns (one listens, the
// rest serve claims, writes and log reads); each call of a method that
// takes no context is bounded by 15s.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors quote the connection string.
		return nil, errors.New("opening job database: the PostgreSQL DSN is not valid (a URL or key=value pairs)")
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = 10
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening job database: %w", err)
	}
	s := &Store{pool: pool, timeout: 15 * time.Second}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
			return fmt.Errorf("migrating job database: %w", err)
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS schema_migrations (version integer NOT NULL)"); err != nil {
			return fmt.Errorf("migrating job database: %w", err)
		}
		v := 0
		err := tx.QueryRow(ctx, "SELECT version FROM schema_migrations").Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES (0)"); err != nil {
				return fmt.Errorf("migrating job database: %w", err)
			}
		case err != nil:
			return fmt.Errorf("reading job database schema version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("job database has schema version %d, newer than this gateway's %d", v, len(migrations))
		}
		for ; v < len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrating job database to version %d: %w", v+1, err)
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE schema_migrations SET version = $1", v); err != nil {
			return fmt.Errorf("migrating job database: %w", err)
		}
		return nil
	})
}

// Close closes the connections.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// finishedAt is r's finish time for the column, NULL until it ends.
func finishedAt(r *store.Record) *time.Time {
	if r.FinishedAt.IsZero() {
		return nil
	}
	return &r.FinishedAt
}

// Put writes r whole, and its idempotency key if it has one. It leaves
// who holds the build as it is.
func (s *Store) Put(r *store.Record) error {
	ctx, cancel := s.ctx()
	defer cancel()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding job %s: %w", r.ID, err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO jobs (id, owner, status, created_at, finished_at, record) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at, record = EXCLUDED.record`,
			r.ID, r.Owner, string(r.Status), r.CreatedAt, finishedAt(r), b); err != nil {
			return err
		}
		return putIdempotency(ctx, tx, r)
	})
	if err != nil {
		return fmt.Errorf("storing job %s: %w", r.ID, err)
	}
	return nil
}

func putIdempotency(ctx context.Context, tx pgx.Tx, r *store.Record) error {
	if r.IdempotencyKey == "" {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO idempotency (owner, key, id) VALUES ($1, $2, $3)
		ON CONFLICT (owner, key) DO UPDATE SET id = EXCLUDED.id`, r.Owner, r.IdempotencyKey, r.ID)
	return err
}

// Get returns the record id.
func (s *Store) Get(id string) (*store.Record, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	r, err := s.get(ctx, s.pool, id)
	if err != nil {
		return nil, fmt.Errorf("reading job %s: %w", id, err)
	}
	return r, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Store) get(ctx context.Context, q querier, id string) (*store.Record, error) {
	var b []byte
	if err := q.QueryRow(ctx, "SELECT record FROM jobs WHERE id = $1", id).Scan(&b); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, store.ErrNotFound
		}
		return nil, err
	}
	var r store.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return &r, nil
}

// All returns every record, oldest first. A record that cannot be decoded
// is an error.
func (s *Store) All() ([]*store.Record, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	return s.query(ctx, "SELECT id, record FROM jobs ORDER BY created_at, id")
}

func (s *Store) query(ctx context.Context, sql string, args ...any) ([]*store.Record, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("reading job database: %w", err)
	}
	defer rows.Close()
	var out []*store.Record
	for rows.Next() {
		var id string
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			return nil, fmt.Errorf("reading job database: %w", err)
		}
		var r store.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decoding job %s: %w", id, err)
		}
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading job database: %w", err)
	}
	return out, nil
}

// Delete removes the records ids, with their contexts and logs, and the
// idempotency keys that still name them.
func (s *Store) Delete(ids ...string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM idempotency WHERE id = ANY($1)", ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM jobs WHERE id = ANY($1)", ids)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting job records: %w", err)
	}
	return nil
}

// Idempotent returns the job ID stored for owner's idempotency key, or
// "" if none is.
func (s *Store) Idempotent(owner, key string) (string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var id string
	err := s.pool.QueryRow(ctx, "SELECT id FROM idempotency WHERE owner = $1 AND key = $2", owner, key).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading idempotency key: %w", err)
	}
	return id, nil
}

// Ping fails unless the database takes writes (a standby in recovery
// does not).
func (s *Store) Ping() error {
	ctx, cancel := s.ctx()
	defer cancel()
	var standby bool
	if err := s.pool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return fmt.Errorf("reaching job database: %w", err)
	}
	if standby {
		return errors.New("job database is a standby in recovery: it takes no writes")
	}
	return nil
}

// What replicas share beyond the records: leases, claims, contexts,
// logs and cancel requests (docs/replication.md).

package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/jobs/store"
)

// Notification channels.
const (
	chanQueue  = "buildgw_queue"
	chanCancel = "buildgw_cancel"
)

// contextChunk is the size of the rows an accepted context is stored in.
const contextChunk = 1 << 20

// claimLock is the key of the transaction lock that serializes claims.
const claimLock = 0x62677763 // "bgwc"

// finalStatuses are the statuses a build ends in, for SQL.
var finalStatuses = []string{string(api.StatusSucceeded), string(api.StatusFailed), string(api.StatusCancelled)}

func encode(r *store.Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding job %s: %w", r.ID, err)
	}
	return b, nil
}

// Register starts replica's lease.
func (s *Store) Register(ctx context.Context, replica string, lease time.Duration) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO replicas (id, lease_until) VALUES ($1, now() + $2::interval)
		ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until`, replica, lease.String())
	if err != nil {
		return fmt.Errorf("registering replica: %w", err)
	}
	return nil
}

// Renew extends replica's lease, or returns ErrLeaseLost if another
// replica has taken it over.
func (s *Store) Renew(ctx context.Context, replica string, lease time.Duration) error {
	tag, err := s.pool.Exec(ctx, "UPDATE replicas SET lease_until = now() + $2::interval WHERE id = $1", replica, lease.String())
	if err != nil {
		return fmt.Errorf("renewing replica lease: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrLeaseLost
	}
	return nil
}

// Create stores a newly accepted build with its context archive, read
// from archive, and wakes the replicas.
func (s *Store) Create(ctx context.Context, r *store.Record, archive io.Reader) error {
	b, err := encode(r)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO jobs (id, owner, status, created_at, record) VALUES ($1, $2, $3, $4, $5)`,
			r.ID, r.Owner, string(r.Status), r.CreatedAt, b); err != nil {
			return err
		}
		if err := claimIdempotency(ctx, tx, r); err != nil {
			return err
		}
		buf := make([]byte, contextChunk)
		for seq := 0; ; seq++ {
			n, rerr := io.ReadFull(archive, buf)
			if n > 0 {
				if _, err := tx.Exec(ctx, "INSERT INTO contexts (id, seq, data) VALUES ($1, $2, $3)", r.ID, seq, buf[:n]); err != nil {
					return err
				}
			}
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				break
			}
			if rerr != nil {
				return fmt.Errorf("reading context: %w", rerr)
			}
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", chanQueue, r.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing job %s: %w", r.ID, err)
	}
	return nil
}

// claimIdempotency records r's idempotency key, if it has one, unless it
// names a live build already: two replicas that take the same submission
// at once each accept it, and only the first to commit may keep it; the
// other gets a *store.DuplicateError. A key whose build is gone, or was
// interrupted by a restart, is taken over, as a single gateway does.
//
// Each step is a statement of its own: the INSERT waits for a concurrent
// one of the same key to commit, and only a later statement's snapshot
// sees that transaction's build.
func claimIdempotency(ctx context.Context, tx pgx.Tx, r *store.Record) error {
	if r.IdempotencyKey == "" {
		return nil
	}
	tag, err := tx.Exec(ctx, `INSERT INTO idempotency (owner, key, id) VALUES ($1, $2, $3) ON CONFLICT (owner, key) DO NOTHING`,
		r.Owner, r.IdempotencyKey, r.ID)
	if err != nil {
		return fmt.Errorf("writing idempotency key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var id string
	var live bool
	err = tx.QueryRow(ctx, `SELECT i.id, EXISTS (SELECT 1 FROM jobs j WHERE j.id = i.id
			AND NOT (j.status = $3 AND starts_with(coalesce(j.record->>'error', ''), $4)))
		FROM idempotency i WHERE i.owner = $1 AND i.key = $2 FOR UPDATE`,
		r.Owner, r.IdempotencyKey, string(api.StatusFailed), api.ErrRestarted).Scan(&id, &live)
	if err != nil {
		return fmt.Errorf("reading idempotency key: %w", err)
	}
	if live {
		return &store.DuplicateError{ID: id}
	}
	if _, err := tx.Exec(ctx, "UPDATE idempotency SET id = $3 WHERE owner = $1 AND key = $2", r.Owner, r.IdempotencyKey, r.ID); err != nil {
		return fmt.Errorf("writing idempotency key: %w", err)
	}
	return nil
}

// Context returns a reader of build id's stored context archive. It
// reads one chunk at a time.
func (s *Store) Context(ctx context.Context, id string) io.Reader {
	return &contextReader{ctx: ctx, s: s, id: id}
}

type contextReader struct {
	ctx context.Context // the reader lives for one extraction
	s   *Store
	id  string
	seq int
	buf []byte
	eof bool
}

func (c *contextReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.eof {
			return 0, io.EOF
		}
		err := c.s.pool.QueryRow(c.ctx, "SELECT data FROM contexts WHERE id = $1 AND seq = $2", c.id, c.seq).Scan(&c.buf)
		if errors.Is(err, pgx.ErrNoRows) {
			c.eof = true
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading stored context of %s: %w", c.id, err)
		}
		c.seq++
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// DeleteContext drops build id's stored context, once it has ended.
func (s *Store) DeleteContext(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, "DELETE FROM contexts WHERE id = $1", id); err != nil {
		return fmt.Errorf("deleting context of %s: %w", id, err)
	}
	return nil
}

// Claim takes the queued, unclaimed build that replica should run next,
// with the attempt that fences its writes; nil if none may start. A
// tenant's builds (the record's tenant, else its owner) held by any
// replica count against its limit: the least of ownerLimit (0: none) and
// its grant's MaxConcurrent. Claims are serialized by a transaction lock,
// so that two replicas claiming at once cannot both take a tenant's last
// slot.
func (s *Store) Claim(ctx context.Context, replica string, ownerLimit int) (*store.Record, int, bool, error) {
	var b []byte
	var attempt int
	var cancelled bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", claimLock); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `WITH held AS (
				SELECT `+tenantOf("jobs")+` AS tenant, count(*) AS n FROM jobs WHERE replica IS NOT NULL AND NOT status = ANY($2) GROUP BY 1)
			UPDATE jobs SET replica = $1, attempt = attempt + 1
			WHERE id = (SELECT q.id FROM jobs q LEFT JOIN held ON held.tenant = `+tenantOf("q")+`
				WHERE q.status = 'queued' AND q.replica IS NULL
					AND coalesce(held.n, 0) < least(coalesce(nullif($3::int, 0), 2147483647),
						coalesce(nullif((q.record->'grant'->>'MaxConcurrent')::int, 0), 2147483647))
				ORDER BY coalesce(held.n, 0), q.created_at, q.id
				FOR UPDATE OF q SKIP LOCKED LIMIT 1)
			AND EXISTS (SELECT 1 FROM replicas WHERE id = $1 AND lease_until > now())
			RETURNING record, attempt, cancel_requested`, replica, finalStatuses, ownerLimit).Scan(&b, &attempt, &cancelled)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("claiming a queued build: %w", err)
	}
	var r store.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, 0, false, fmt.Errorf("decoding claimed job: %w", err)
	}
	return &r, attempt, cancelled, nil
}

// PutHeld writes r as the replica that holds it in attempt, or returns
// ErrNotHeld. The read token stays what the database has: another
// replica may have replaced it (a repeated submission).
func (s *Store) PutHeld(r *store.Record, replica string, attempt int) error {
	ctx, cancel := s.ctx()
	defer cancel()
	b, err := encode(r)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET status = $4, finished_at = $5,
		record = $6::jsonb || jsonb_strip_nulls(jsonb_build_object('read_token_sha256', record->'read_token_sha256'))
		WHERE id = $1 AND replica = $2 AND attempt = $3`,
		r.ID, replica, attempt, string(r.Status), finishedAt(r), b)
	if err != nil {
		return fmt.Errorf("storing job %s: %w", r.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotHeld
	}
	return nil
}

// Release puts build r, held by replica in attempt, back in the queue
// for any replica, as r says (queued, with a transition saying why).
func (s *Store) Release(ctx context.Context, r *store.Record, replica string, attempt int) error {
	b, err := encode(r)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET status = 'queued', replica = NULL,
		record = $4::jsonb || jsonb_strip_nulls(jsonb_build_object('read_token_sha256', record->'read_token_sha256'))
		WHERE id = $1 AND replica = $2 AND attempt = $3`, r.ID, replica, attempt, b)
	if err != nil {
		return fmt.Errorf("queueing job %s again: %w", r.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotHeld
	}
	_, err = s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", chanQueue, r.ID)
	return err
}

// CancelQueued applies f, which ends the build and returns a line for
// its log, to build id if it is queued and no replica holds it, and
// reports whether it was.
func (s *Store) CancelQueued(ctx context.Context, id string, f func(r *store.Record) []byte) (bool, error) {
	done := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b []byte
		err := tx.QueryRow(ctx, "SELECT record FROM jobs WHERE id = $1 AND status = 'queued' AND replica IS NULL FOR UPDATE", id).Scan(&b)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		var r store.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		line := f(&r)
		if b, err = encode(&r); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE jobs SET status = $2, finished_at = $3, record = $4 WHERE id = $1",
			id, string(r.Status), finishedAt(&r), b); err != nil {
			return err
		}
		// In the same transaction: whoever sees the build ended finds the
		// line in its log.
		if err := appendLog(ctx, tx, id, line); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM contexts WHERE id = $1", id); err != nil {
			return err
		}
		done = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("cancelling queued job %s: %w", id, err)
	}
	return done, nil
}

// RequestCancel flags build id for cancelling and tells the replicas;
// the one holding it acts on it.
func (s *Store) RequestCancel(ctx context.Context, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE jobs SET cancel_requested = true WHERE id = $1", id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", chanCancel, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("requesting cancel of %s: %w", id, err)
	}
	return nil
}

// CancelRequested returns those of ids, builds replica holds, whose
// cancel was requested.
func (s *Store) CancelRequested(ctx context.Context, replica string, ids []string) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT id FROM jobs WHERE id = ANY($1) AND replica = $2 AND cancel_requested", ids, replica)
	if err != nil {
		return nil, fmt.Errorf("reading cancel requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading cancel requests: %w", err)
	}
	return out, nil
}

// SetReadToken replaces build id's read token sha256 (hex).
func (s *Store) SetReadToken(ctx context.Context, id, sum string) error {
	_, err := s.pool.Exec(ctx, "UPDATE jobs SET record = jsonb_set(record, '{read_token_sha256}', to_jsonb($2::text)) WHERE id = $1", id, sum)
	if err != nil {
		return fmt.Errorf("storing read token of %s: %w", id, err)
	}
	return nil
}

// Takeover finds the replicas whose lease expired, gives requeue each of
// their unfinished builds to change (into queued, saying why; a runner
// may clean up the builds that ran first, before any other replica can
// claim them) and to return a line for its log, puts them back in the
// queue and forgets the replicas. It returns the builds queued again.
// Replicas doing this at once each take other dead replicas, or none.
func (s *Store) Takeover(ctx context.Context, requeue func(ctx context.Context, r *store.Record) []byte) ([]*store.Record, error) {
	var out []*store.Record
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT id FROM replicas WHERE lease_until < now() FOR UPDATE SKIP LOCKED")
		if err != nil {
			return err
		}
		dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(dead) == 0 {
			return err
		}
		rows, err = tx.Query(ctx, "SELECT record FROM jobs WHERE replica = ANY($1) AND NOT status = ANY($2) FOR UPDATE",
			dead, finalStatuses)
		if err != nil {
			return err
		}
		recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Record, error) {
			var b []byte
			if err := row.Scan(&b); err != nil {
				return nil, err
			}
			var r store.Record
			return &r, json.Unmarshal(b, &r)
		})
		if err != nil {
			return err
		}
		for _, r := range recs {
			line := requeue(ctx, r)
			b, err := encode(r)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE jobs SET status = 'queued', replica = NULL, record = $2 WHERE id = $1", r.ID, b); err != nil {
				return err
			}
			if err := appendLog(ctx, tx, r.ID, line); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, "DELETE FROM replicas WHERE id = ANY($1)", dead); err != nil {
			return err
		}
		if len(recs) > 0 {
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", chanQueue); err != nil {
				return err
			}
		}
		out = recs
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("taking over expired replicas: %w", err)
	}
	return out, nil
}

// Leave ends replica's lease at once, so that its unfinished builds (it
// has stopped them) are queued again at the next takeover.
func (s *Store) Leave(ctx context.Context, replica string) error {
	if _, err := s.pool.Exec(ctx, "UPDATE replicas SET lease_until = '-infinity' WHERE id = $1", replica); err != nil {
		return fmt.Errorf("leaving: %w", err)
	}
	return nil
}

// tenantOf is the SQL expression of the tenant of the jobs row t: whose
// limits its build counts against, the record's tenant, else (records
// from before tenants) its owner.
func tenantOf(t string) string {
	return "coalesce(nullif(" + t + ".record->>'tenant', ''), " + t + ".owner)"
}

// Queued returns how many builds wait in the shared queue, in all and of
// tenant (a record's tenant, else its owner).
func (s *Store) Queued(ctx context.Context, tenant string) (total, ofTenant int, err error) {
	err = s.pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE "+tenantOf("jobs")+" = $1) FROM jobs WHERE status = 'queued'", tenant).Scan(&total, &ofTenant)
	if err != nil {
		return 0, 0, fmt.Errorf("counting queued builds: %w", err)
	}
	return total, ofTenant, nil
}

// Owned returns owner's records, newest first.
func (s *Store) Owned(ctx context.Context, owner string) ([]*store.Record, error) {
	return s.query(ctx, "SELECT id, record FROM jobs WHERE owner = $1 ORDER BY created_at DESC, id DESC", owner)
}

// Expire deletes the builds that ended before cutoff, with their logs,
// contexts and the idempotency keys that still name them, and returns
// how many.
func (s *Store) Expire(ctx context.Context, cutoff time.Time) (int, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM idempotency i USING jobs j WHERE i.id = j.id AND j.finished_at < $1", cutoff); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM jobs WHERE finished_at < $1", cutoff)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("expiring finished builds: %w", err)
	}
	return int(n), nil
}

// AppendLog appends p to build id's log.
func (s *Store) AppendLog(ctx context.Context, id string, p []byte) error {
	var err error
	for range 5 {
		err = appendLog(ctx, s.pool, id, p)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23505" {
			break // not two appends racing for one sequence number
		}
	}
	if err != nil {
		return fmt.Errorf("appending to log of %s: %w", id, err)
	}
	return nil
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func appendLog(ctx context.Context, e execer, id string, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	_, err := e.Exec(ctx, `INSERT INTO logs (id, seq, off, data)
		SELECT $1, coalesce(l.seq + 1, 0), coalesce(l.off + length(l.data), 0), $2
		FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT seq, off, data FROM logs WHERE id = $1 ORDER BY seq DESC LIMIT 1) AS l ON true`, id, p)
	return err
}

// ReadLog returns build id's log from byte offset on, at most about max
// bytes of it.
func (s *Store) ReadLog(ctx context.Context, id string, offset int64, max int) ([]byte, error) {
	rows, err := s.pool.Query(ctx, "SELECT off, data FROM logs WHERE id = $1 AND off + length(data) > $2 ORDER BY seq", id, offset)
	if err != nil {
		return nil, fmt.Errorf("reading log of %s: %w", id, err)
	}
	defer rows.Close()
	var out bytes.Buffer
	for rows.Next() && out.Len() < max {
		var off int64
		var data []byte
		if err := rows.Scan(&off, &data); err != nil {
			return nil, fmt.Errorf("reading log of %s: %w", id, err)
		}
		if off < offset {
			data = data[offset-off:]
		}
		out.Write(data)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading log of %s: %w", id, err)
	}
	return out.Bytes(), nil
}

// Listen calls queue for every build queued and cancel for every cancel
// request, from any replica, until ctx ends; it reconnects after an
// error. Notifications can be missed while it reconnects: callers also
// poll.
func (s *Store) Listen(ctx context.Context, queue func(), cancel func(id string)) {
	for ctx.Err() == nil {
		err := s.listen(ctx, queue, cancel)
		if ctx.Err() != nil {
			return
		}
		_ = err // the callers' polls cover the gap
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) listen(ctx context.Context, queue func(), cancel func(id string)) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	conn := c.Conn()
	for _, ch := range []string{chanQueue, chanCancel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	// Not back to the pool: it listens.
	defer c.Hijack().Close(context.Background())
	queue() // what was queued while not listening
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case chanQueue:
			queue()
		case chanCancel:
			cancel(n.Payload)
		}
	}
}

package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testpg"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/pgstore"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/jobs/storetest"
	"github.com/jackc/pgx/v5"
)

var _ jobs.SharedStore = (*pgstore.Store)(nil)

func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// register gives replicas an hour's lease.
func register(t *testing.T, s *pgstore.Store, replicas ...string) {
	t.Helper()
	for _, r := range replicas {
		if err := s.Register(context.Background(), r, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
}

func create(t *testing.T, s *pgstore.Store, id string, archive []byte) {
	t.Helper()
	r := storetest.Record(id)
	r.CreatedAt = r.CreatedAt.Add(time.Duration(len(id)) * time.Millisecond)
	if err := s.Create(context.Background(), r, bytes.NewReader(archive)); err != nil {
		t.Fatalf("Create(%s) = %v", id, err)
	}
}

// TestClaimSkipLocked: replicas claiming at once never take the same
// build, and every queued build is taken once.
func TestClaimSkipLocked(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	s := open(t, dsn)
	const n = 40
	for i := range n {
		create(t, s, fmt.Sprintf("b%02d", i), []byte("ctx"))
	}
	replicas := []*pgstore.Store{s, open(t, dsn), open(t, dsn), open(t, dsn)}
	register(t, s, "replica-0", "replica-1", "replica-2", "replica-3", "late")
	var mu sync.Mutex
	claimed := map[string]string{}
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprint("replica-", i)
			for {
				rec, attempt, _, err := r.Claim(ctx, name, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if rec == nil {
					return
				}
				mu.Lock()
				if prev, ok := claimed[rec.ID]; ok {
					t.Errorf("build %s claimed by %s and %s", rec.ID, prev, name)
				}
				claimed[rec.ID] = name
				mu.Unlock()
				if attempt != 1 {
					t.Errorf("Claim(%s) attempt = %d, want 1", rec.ID, attempt)
				}
			}
		}()
	}
	wg.Wait()
	if len(claimed) != n {
		t.Errorf("claimed %d builds, want %d", len(claimed), n)
	}
	if rec, _, _, _ := s.Claim(ctx, "late", 0); rec != nil {
		t.Errorf("Claim after all were taken = %s, want none", rec.ID)
	}
}

// TestTakeover: a replica whose lease expired loses its builds to the
// queue; its late writes are refused; a live replica's builds stay.
func TestTakeover(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	s := open(t, dsn)
	if err := s.Register(ctx, "dead", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, "live", time.Hour); err != nil {
		t.Fatal(err)
	}
	create(t, s, "a", []byte("ctx-a"))
	create(t, s, "bb", []byte("ctx-b"))
	ra, attemptA, _, err := s.Claim(ctx, "dead", 0)
	if err != nil || ra == nil || ra.ID != "a" {
		t.Fatalf("Claim(dead) = %v, %v, want a", ra, err)
	}
	ra.Status = api.StatusRunning
	if err := s.PutHeld(ra, "dead", attemptA); err != nil {
		t.Fatalf("PutHeld(a) by its holder = %v", err)
	}
	rb, _, _, _ := s.Claim(ctx, "live", 0)
	if rb == nil || rb.ID != "bb" {
		t.Fatalf("Claim(live) = %v, want bb", rb)
	}
	// Before the lease ends nothing is taken.
	if recs, err := s.Takeover(ctx, func(context.Context, *store.Record) []byte { return nil }); err != nil || len(recs) != 0 {
		t.Fatalf("Takeover before expiry = %d builds, %v, want none", len(recs), err)
	}
	deadline := time.Now().Add(testenv.Scale(20 * time.Second))
	var taken []*store.Record
	for len(taken) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		taken, err = s.Takeover(ctx, func(_ context.Context, r *store.Record) []byte {
			r.Status = api.StatusQueued
			r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusQueued, At: time.Now(), Reason: "taken over"})
			return []byte("taken over\n")
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(taken) != 1 || taken[0].ID != "a" {
		t.Fatalf("Takeover = %v, want a alone (bb's holder is live)", taken)
	}
	if err := s.Renew(ctx, "dead", time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Renew(dead) after takeover = %v, want ErrLeaseLost", err)
	}
	ra.Status = api.StatusSucceeded
	if err := s.PutHeld(ra, "dead", attemptA); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("PutHeld(a) by the dead replica = %v, want ErrNotHeld", err)
	}
	again, attempt, _, err := s.Claim(ctx, "live", 0)
	if err != nil || again == nil || again.ID != "a" || attempt != 2 || again.Status != api.StatusQueued {
		t.Fatalf("Claim after takeover = %+v, attempt %d, %v; want a queued, attempt 2", again, attempt, err)
	}
	if l, _ := s.ReadLog(ctx, "a", 0, 1<<10); string(l) != "taken over\n" {
		t.Errorf("log of a after takeover = %q, want the line requeue returned", l)
	}
	if got, _ := io.ReadAll(s.Context(ctx, "a")); string(got) != "ctx-a" {
		t.Errorf("Context(a) = %q, want the stored archive", got)
	}
}

// TestContextChunks: a context larger than one row reads back whole.
func TestContextChunks(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7)
	create(t, s, "big", big)
	got, err := io.ReadAll(s.Context(ctx, "big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Context(big) = %d bytes, %v, want the %d stored", len(got), err, len(big))
	}
	if err := s.DeleteContext(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(s.Context(ctx, "big")); len(got) != 0 {
		t.Errorf("Context(big) after DeleteContext = %d bytes, want none", len(got))
	}
}

// TestLogOffsets: appended chunks read back from any byte offset.
func TestLogOffsets(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	create(t, s, "l", nil)
	want := ""
	for i := range 50 {
		line := fmt.Sprintf("line %d\n", i)
		want += line
		if err := s.AppendLog(ctx, "l", []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	for _, off := range []int64{0, 1, 7, 100, int64(len(want)) - 1, int64(len(want))} {
		got, err := s.ReadLog(ctx, "l", off, 1<<20)
		if err != nil || string(got) != want[off:] {
			t.Errorf("ReadLog(l, %d) = %q, %v, want %q", off, got, err, want[off:])
		}
	}
}

// TestCancel: a queued, unclaimed build is cancelled at once; a claimed
// one is flagged for its holder, who is told.
func TestCancel(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	s, other := open(t, dsn), open(t, dsn)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	cancels := make(chan string, 4)
	listening := make(chan struct{}, 1)
	go other.Listen(lctx, func() {
		select {
		case listening <- struct{}{}:
		default:
		}
	}, func(id string) { cancels <- id })
	<-listening
	register(t, s, "holder")
	create(t, s, "q", nil)
	create(t, s, "rr", nil)
	ok, err := s.CancelQueued(ctx, "q", func(r *store.Record) []byte {
		r.Status = api.StatusCancelled
		return []byte("cancelled\n")
	})
	if err != nil || !ok {
		t.Fatalf("CancelQueued(q) = %v, %v, want true", ok, err)
	}
	if r, _ := s.Get("q"); r.Status != api.StatusCancelled {
		t.Errorf("q = %s after CancelQueued, want cancelled", r.Status)
	}
	if l, _ := s.ReadLog(ctx, "q", 0, 1<<10); string(l) != "cancelled\n" {
		t.Errorf("log of q = %q, want the line CancelQueued was given", l)
	}
	if r, _, _, _ := s.Claim(ctx, "holder", 0); r == nil || r.ID != "rr" {
		t.Fatalf("Claim = %v, want rr (q is cancelled)", r)
	}
	ok, err = s.CancelQueued(ctx, "rr", func(r *store.Record) []byte { r.Status = api.StatusCancelled; return nil })
	if err != nil || ok {
		t.Fatalf("CancelQueued(claimed rr) = %v, %v, want false", ok, err)
	}
	if err := s.RequestCancel(ctx, "rr"); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-cancels:
		if id != "rr" {
			t.Errorf("cancel notification for %q, want rr", id)
		}
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Error("no cancel notification")
	}
	if ids, err := s.CancelRequested(ctx, "holder", []string{"rr", "q"}); err != nil || len(ids) != 1 || ids[0] != "rr" {
		t.Errorf("CancelRequested(holder) = %v, %v, want [rr]", ids, err)
	}
}

// TestReadTokenKeptByHolder: a read token another replica set survives
// the holder's next write of its (older) record.
func TestReadTokenKeptByHolder(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	register(t, s, "h")
	create(t, s, "a", nil)
	r, attempt, _, _ := s.Claim(ctx, "h", 0)
	if err := s.SetReadToken(ctx, "a", "ff"); err != nil {
		t.Fatal(err)
	}
	r.Status = api.StatusRunning
	if err := s.PutHeld(r, "h", attempt); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("a"); got.ReadTokenSHA256 != "ff" || got.Status != api.StatusRunning {
		t.Errorf("after PutHeld: token %q, status %s; want ff, running", got.ReadTokenSHA256, got.Status)
	}
}

// TestClaimTenantLimit: a tenant's builds count against its limit and
// its share of the queue whichever identities submitted them, and a
// record from before tenants counts as its owner's.
func TestClaimTenantLimit(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	register(t, s, "a", "b")
	rec := func(id, owner, tenant string, after time.Duration) {
		t.Helper()
		r := storetest.Record(id)
		r.Owner, r.LimitTenant, r.Grant = owner, tenant, []byte(`{"MaxConcurrent":1}`)
		r.CreatedAt = r.CreatedAt.Add(after)
		if err := s.Create(ctx, r, bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
	}
	rec("a-b1", "gitlab:g/a:b1", "g/a", 0)
	rec("a-b2", "gitlab:g/a:b2", "g/a", time.Second)
	rec("legacy-1", "legacy", "", 2*time.Second)
	rec("legacy-2", "legacy", "", 3*time.Second)
	rec("b-b1", "gitlab:g/b:b1", "g/b", 4*time.Second)
	for _, tc := range []struct {
		tenant     string
		want, open int
	}{
		{"g/a", 2, 5},
		{"legacy", 2, 5},
		{"gitlab:g/a:b1", 0, 5},
	} {
		total, of, err := s.Queued(ctx, tc.tenant)
		if err != nil || total != tc.open || of != tc.want {
			t.Errorf("Queued(%s) = %d, %d, %v, want %d, %d", tc.tenant, total, of, err, tc.open, tc.want)
		}
	}
	for _, tc := range []struct {
		replica string
		want    string
	}{
		{"a", "a-b1"},     // oldest
		{"b", "legacy-1"}, // g/a holds its one slot, though a-b2 is another identity's
		{"a", "b-b1"},     // legacy holds its one slot
		{"b", ""},         // every tenant at its limit
	} {
		r, _, _, err := s.Claim(ctx, tc.replica, 0)
		if err != nil {
			t.Fatalf("Claim(%s) = %v", tc.replica, err)
		}
		got := ""
		if r != nil {
			got = r.ID
		}
		if got != tc.want {
			t.Fatalf("Claim(%s) = %q, want %q", tc.replica, got, tc.want)
		}
	}
}

// TestClaimOwnerLimit: an identity's builds held by any replica count
// against its limit (queue.max_running_per_identity, or its grant's
// MaxConcurrent if lower): a replica skips its queued builds while it is
// at the limit, and takes another identity's instead.
func TestClaimOwnerLimit(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	register(t, s, "a", "b")
	rec := func(id, owner, grant string, after time.Duration) *store.Record {
		r := storetest.Record(id)
		r.Owner, r.LimitTenant, r.Grant = owner, "", []byte(grant) // records from before tenants
		r.CreatedAt = r.CreatedAt.Add(after)
		if err := s.Create(ctx, r, bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
		return r
	}
	rec("ci-1", "ci", `{"MaxConcurrent":0}`, 0)
	rec("ci-2", "ci", `{"MaxConcurrent":0}`, time.Second)
	rec("other-1", "other", `{"MaxConcurrent":0}`, 2*time.Second)
	rec("capped-1", "capped", `{"MaxConcurrent":1}`, 3*time.Second)
	rec("capped-2", "capped", `{"MaxConcurrent":1}`, 4*time.Second)
	claim := func(replica string, limit int) string {
		t.Helper()
		r, _, _, err := s.Claim(ctx, replica, limit)
		if err != nil {
			t.Fatalf("Claim(%s, %d) = %v", replica, limit, err)
		}
		if r == nil {
			return ""
		}
		return r.ID
	}
	for _, tc := range []struct {
		replica string
		limit   int
		want    string
	}{
		{"a", 1, "ci-1"},     // oldest
		{"b", 1, "other-1"},  // ci holds its one slot on replica a
		{"b", 1, "capped-1"}, // its grant allows one
		{"a", 1, ""},         // every identity at its limit, whichever replica holds it
		{"a", 2, "ci-2"},     // a higher gateway limit: ci may run two
		{"b", 0, ""},         // no gateway limit, but capped's grant allows one
	} {
		if got := claim(tc.replica, tc.limit); got != tc.want {
			t.Fatalf("Claim(%s, limit %d) = %q, want %q", tc.replica, tc.limit, got, tc.want)
		}
	}
}

// TestClaimNeedsLease: a replica whose lease is gone (expired, taken
// over, or never given) claims nothing.
func TestClaimNeedsLease(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	create(t, s, "a", nil)
	if err := s.Register(ctx, "expired", -time.Second); err != nil {
		t.Fatal(err)
	}
	for _, replica := range []string{"unregistered", "expired"} {
		if r, _, _, err := s.Claim(ctx, replica, 0); err != nil || r != nil {
			t.Errorf("Claim(%s) = %v, %v, want none", replica, r, err)
		}
	}
	register(t, s, "live")
	if r, _, _, err := s.Claim(ctx, "live", 0); err != nil || r == nil {
		t.Errorf("Claim(live) = %v, %v, want a", r, err)
	}
}

// TestClaimFair: a tenant that runs builds and floods the queue, from an
// identity per build, waits behind another's later build.
func TestClaimFair(t *testing.T) {
	ctx := context.Background()
	s := open(t, testpg.Start(t).NewDatabase(t))
	register(t, s, "h")
	base := storetest.Record("x").CreatedAt
	for i, id := range []string{"flood-1", "flood-2", "flood-3", "flood-4", "quiet"} {
		r := storetest.Record(id)
		r.Owner = "ci:" + id
		if id == "quiet" {
			r.LimitTenant = "quiet"
		}
		r.CreatedAt = base.Add(time.Duration(i) * time.Second)
		if err := s.Create(ctx, r, bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range 5 {
		r, _, _, err := s.Claim(ctx, "h", 0)
		if err != nil || r == nil {
			t.Fatalf("Claim = %v, %v", r, err)
		}
		got = append(got, r.ID)
	}
	// The flood's first build is the oldest; then its tenant runs one and
	// quiet none.
	if want := []string{"flood-1", "quiet", "flood-2", "flood-3", "flood-4"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("claims in order %v, want %v", got, want)
	}
}

// blockingReader gives its bytes once release is closed, holding the
// Create that reads it (and its transaction) open until then.
type blockingReader struct {
	release <-chan struct{}
	r       io.Reader
}

func (b *blockingReader) Read(p []byte) (int, error) {
	<-b.release
	return b.r.Read(p)
}

// TestCreateIdempotent: two replicas that accept the same submission (one
// owner, one Idempotency-Key) at once store one build: the second to
// commit gets a DuplicateError naming the first, even though it began
// before the first committed. A key whose build a restart interrupted is
// taken over.
func TestCreateIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	watch, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	count := func(q string) func() bool {
		return func() bool {
			var n int
			return watch.QueryRow(ctx, q).Scan(&n) == nil && n > 0
		}
	}
	rec := func(id string) *store.Record {
		r := storetest.Record(id)
		r.IdempotencyKey = "retry-1"
		return r
	}
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- a.Create(ctx, rec("first"), &blockingReader{release, bytes.NewReader([]byte("ctx"))}) }()
	// The first holds its key uncommitted; the second's insert of the same
	// key waits for it.
	waitFor(t, "the first Create to hold its key", count("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE '%INSERT INTO idempotency%'"))
	second := make(chan error, 1)
	go func() { second <- b.Create(ctx, rec("second"), bytes.NewReader([]byte("ctx"))) }()
	waitFor(t, "the second Create to wait for the first", count("SELECT count(*) FROM pg_locks WHERE NOT granted"))
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first Create = %v", err)
	}
	var dup *store.DuplicateError
	if err := <-second; !errors.As(err, &dup) || dup.ID != "first" {
		t.Fatalf("second Create = %v, want a DuplicateError naming first", err)
	}
	if _, err := b.Get("second"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(second) = %v, want ErrNotFound: the duplicate must leave nothing", err)
	}
	if id, err := b.Idempotent("ci", "retry-1"); err != nil || id != "first" {
		t.Errorf("Idempotent(retry-1) = %q, %v; want first", id, err)
	}

	// Interrupted by a restart: the same submission sent again is new.
	r, err := a.Get("first")
	if err != nil {
		t.Fatal(err)
	}
	r.Status, r.Error = api.StatusFailed, api.ErrRestarted
	if err := a.Put(r); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, rec("third"), bytes.NewReader([]byte("ctx"))); err != nil {
		t.Fatalf("Create after the first was interrupted = %v, want nil", err)
	}
	if id, err := b.Idempotent("ci", "retry-1"); err != nil || id != "third" {
		t.Errorf("Idempotent(retry-1) = %q, %v; want third", id, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(30 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

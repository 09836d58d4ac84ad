package jobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/jackc/pgx/v5"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/internal/testpg"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/pgstore"
	"github.com/buildgw/buildgw/jobs/store"
)

// replica starts a Manager on the shared database dsn, named name.
func replica(t *testing.T, dsn, name string, workers bool, opts ...jobs.Option) *testmanager.Env {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return testmanager.New(t, testmanager.Options{NoWorkers: !workers,
		Builder: append([]jobs.Option{jobs.WithStore(s), jobs.WithReplica(name, 3*time.Second)}, opts...)})
}

// waitFinal polls build id through m until it has ended.
func waitFinal(t *testing.T, m *jobs.Manager, owner, id string, d time.Duration) api.Build {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for {
		j, err := m.Get(owner, id)
		if err != nil {
			t.Fatalf("Get(%s) = %v", id, err)
		}
		if b := j.Snapshot(); b.Status.Final() {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %s after %s; log:\n%s", id, j.Status(), d, logOf(t, j))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func finals(ts []store.Transition) int {
	n := 0
	for _, tr := range ts {
		if tr.Status.Final() {
			n++
		}
	}
	return n
}

// TestReplicasServeOneQueue: a build submitted to a replica that runs no
// builds is run by another; the first answers its status, log, read
// token and idempotency key, and the image is in the registry.
func TestReplicasServeOneQueue(t *testing.T) {
	dsn := testpg.Start(t).NewDatabase(t)
	a := replica(t, dsn, "a", false)
	b := replica(t, dsn, "b", true)
	tok := sha256.Sum256([]byte("bgr_token"))
	dest := b.Registry + "/test/shared:v1"
	j, err := a.M.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", IdempotencyKey: "k1", ReadTokenSHA256: tok,
		Spec: api.BuildSpec{Destinations: []string{dest}}}, bytes.NewReader(scratchContext(t, "shared queue")))
	if err != nil {
		t.Fatalf("Submit to a = %v", err)
	}
	// The context is in the shared store: a keeps neither its workspace
	// nor the copy of the upload.
	if ws := (&env{l: a.Layout}).workspaces(t); len(ws) != 0 {
		t.Errorf("workspaces on a after it stored the build = %v, want none", ws)
	}
	if up, _ := filepath.Glob(filepath.Join(a.StateDir, ".upload-*")); len(up) != 0 {
		t.Errorf("copies of uploads left on a = %v, want none", up)
	}
	// Followed from a, while b runs it: until it ends.
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	var log bytes.Buffer
	if err := j.Log.WriteTo(ctx, &log, 0, true); err != nil {
		t.Fatalf("following the log from a = %v; got:\n%s", err, log.String())
	}
	got := waitFinal(t, a.M, "alice", j.ID, 10*time.Second)
	if got.Status != api.StatusSucceeded || got.Digest == "" {
		t.Fatalf("build from a = %s %q (%s), want succeeded with a digest; log:\n%s", got.Status, got.Digest, got.Error, log.String())
	}
	for _, want := range []string{"#buildgw accepted:", "#buildgw pushed " + got.Digest} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log followed from a lacks %q:\n%s", want, log.String())
		}
	}
	if d, err := crane.Digest(dest, crane.Insecure); err != nil || d != got.Digest {
		t.Errorf("crane.Digest(%s) = %s, %v, want %s", dest, d, err, got.Digest)
	}
	if _, err := a.M.GetByReadToken(j.ID, tok); err != nil {
		t.Errorf("GetByReadToken on a = %v", err)
	}
	if _, err := b.M.GetByReadToken(j.ID, sha256.Sum256([]byte("other"))); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("GetByReadToken(wrong token) on b = %v, want ErrNotFound", err)
	}
	// The same submission sent to b is the same build.
	again, err := b.M.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", IdempotencyKey: "k1",
		Spec: api.BuildSpec{Destinations: []string{dest}}}, bytes.NewReader(scratchContext(t, "shared queue")))
	if err != nil || again.ID != j.ID {
		t.Errorf("Submit with the same key to b = %v, %v, want build %s", again, err, j.ID)
	}
	if l := b.M.List("alice"); len(l) != 1 || l[0].ID != j.ID {
		t.Errorf("List(alice) on b = %d builds, want %s alone", len(l), j.ID)
	}
	if _, err := b.M.Get("bob", j.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get by another owner on b = %v, want ErrNotFound", err)
	}
}

// TestReplicaTakesOverDeadReplica: a build held by a replica whose lease
// expires is queued again and run by a live one; it ends once, and the
// dead replica's late write is refused.
func TestReplicaTakesOverDeadReplica(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	a := replica(t, dsn, "a", false)
	dest := a.Registry + "/test/takeover:v1"
	j, err := a.M.Submit(ctx, jobs.SubmitRequest{Owner: "alice", Spec: api.BuildSpec{Destinations: []string{dest}}},
		bytes.NewReader(scratchContext(t, "taken over")))
	if err != nil {
		t.Fatal(err)
	}
	// "dead" claims and starts it, then never renews its lease.
	dead, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	if err := dead.Register(ctx, "dead", time.Second); err != nil {
		t.Fatal(err)
	}
	r, attempt, _, err := dead.Claim(ctx, "dead", 0)
	if err != nil || r == nil || r.ID != j.ID {
		t.Fatalf("Claim(dead) = %v, %v, want %s", r, err, j.ID)
	}
	r.Status = api.StatusRunning
	r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusRunning, At: time.Now()})
	if err := dead.PutHeld(r, "dead", attempt); err != nil {
		t.Fatal(err)
	}
	dead.AppendLog(ctx, j.ID, []byte("first attempt, on the replica that dies\n"))

	b := replica(t, dsn, "b", true)
	got := waitFinal(t, b.M, "alice", j.ID, 3*time.Minute)
	if got.Status != api.StatusSucceeded {
		t.Fatalf("taken-over build = %s (%s), want succeeded", got.Status, got.Error)
	}
	if d, err := crane.Digest(dest, crane.Insecure); err != nil || d != got.Digest {
		t.Errorf("crane.Digest(%s) = %s, %v, want %s", dest, d, err, got.Digest)
	}
	rec, err := dead.Get(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := finals(rec.Transitions); n != 1 {
		t.Errorf("build has %d final transitions, want 1: %+v", n, rec.Transitions)
	}
	requeued := false
	for _, tr := range rec.Transitions {
		requeued = requeued || (tr.Status == api.StatusQueued && strings.Contains(tr.Reason, "stopped renewing its lease"))
	}
	if !requeued {
		t.Errorf("transitions %+v lack the requeue after the lease expired", rec.Transitions)
	}
	r.Status, r.Digest = api.StatusFailed, ""
	if err := dead.PutHeld(r, "dead", attempt); !errors.Is(err, store.ErrNotHeld) {
		t.Errorf("PutHeld by the dead replica after takeover = %v, want ErrNotHeld", err)
	}
	if after, _ := dead.Get(j.ID); after.Status != api.StatusSucceeded {
		t.Errorf("status after the dead replica's late write = %s, want succeeded", after.Status)
	}
	jb, _ := a.M.Get("alice", j.ID)
	log := logOf(t, jb)
	for _, want := range []string{"first attempt, on the replica that dies", "queued again (was running)", "running again on replica b (attempt 2)", "#buildgw pushed"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestReplicaCancelFromAnother: a queued build is cancelled by any
// replica at once; a running one by the replica running it, asked by
// another.
func TestReplicaCancelFromAnother(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	a := replica(t, dsn, "a", false)
	q, err := a.M.Submit(ctx, jobs.SubmitRequest{Owner: "alice", Spec: api.BuildSpec{Destinations: []string{a.Registry + "/test/q:v1"}}},
		bytes.NewReader(scratchContext(t, "never built")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.M.Cancel("alice", q.ID); err != nil {
		t.Fatalf("Cancel(queued) = %v", err)
	}
	if got := waitFinal(t, a.M, "alice", q.ID, 5*time.Second); got.Status != api.StatusCancelled {
		t.Errorf("queued build after Cancel = %s, want cancelled", got.Status)
	}

	b := replica(t, dsn, "b", true)
	base := testenv.Busybox(t, b.Registry)
	j, err := a.M.Submit(ctx, jobs.SubmitRequest{Owner: "alice", Spec: api.BuildSpec{Destinations: []string{b.Registry + "/test/slow:v1"}}},
		bytes.NewReader(busyboxContext(t, base, "echo started-on-b; sleep 600")))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testenv.Scale(3 * time.Minute))
	for {
		jv, err := a.M.Get("alice", j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logOf(t, jv), "started-on-b") {
			break
		}
		if s := jv.Status(); s.Final() || time.Now().After(deadline) {
			t.Fatalf("build %s is %s, never printed started-on-b; log:\n%s", j.ID, s, logOf(t, jv))
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	jc, err := a.M.Cancel("alice", j.ID)
	if err != nil {
		t.Fatalf("Cancel(running, from a) = %v", err)
	}
	// Wait learns of the end from the shared store, as the API's cancel
	// does before it answers.
	wctx, cancel := context.WithTimeout(ctx, testenv.Scale(time.Minute))
	defer cancel()
	if err := jobs.Wait(wctx, jc); err != nil {
		t.Fatalf("Wait(cancelled build) = %v", err)
	}
	got := jc.Snapshot()
	if got.Status != api.StatusCancelled {
		t.Errorf("running build after Cancel from a = %s (%s), want cancelled", got.Status, got.Error)
	}
	t.Logf("cancelled %s after the request", time.Since(start).Round(time.Millisecond))
	if _, err := a.M.Cancel("alice", j.ID); !errors.Is(err, jobs.ErrFinished) {
		t.Errorf("Cancel(ended) = %v, want ErrFinished", err)
	}
}

// startRun runs m's workers until the returned stop is called, which
// waits for Run to return.
func startRun(t *testing.T, m *jobs.Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(testenv.Scale(time.Minute)):
			t.Fatal("Run did not return a minute after its context ended")
		}
	}
	t.Cleanup(stop)
	return sync.OnceFunc(stop)
}

func waitSharedLog(t *testing.T, m *jobs.Manager, id, line string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(3 * time.Minute))
	for {
		j, err := m.Get("alice", id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logOf(t, j), line) {
			return
		}
		if s := j.Status(); s.Final() || time.Now().After(deadline) {
			t.Fatalf("build %s is %s, its log lacks %q:\n%s", id, s, line, logOf(t, j))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReplicaShutdownRequeues: a replica shutting down puts the build it
// could not finish within its grace period back in the queue, for
// another replica, instead of failing it.
func TestReplicaShutdownRequeues(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	b := replica(t, dsn, "b", false, jobs.WithShutdownGrace(0))
	base := testenv.Busybox(t, b.Registry)
	j, err := b.M.Submit(ctx, jobs.SubmitRequest{Owner: "alice", Spec: api.BuildSpec{Destinations: []string{b.Registry + "/test/shutdown:v1"}}},
		bytes.NewReader(busyboxContext(t, base, "echo started; sleep 3; echo done")))
	if err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, b.M)
	waitSharedLog(t, b.M, j.ID, "started")
	stop()
	st, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Get(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if last := r.Transitions[len(r.Transitions)-1]; r.Status != api.StatusQueued || !strings.Contains(last.Reason, "shut down") {
		t.Fatalf("build after its replica shut down = %s (last transition %+v), want queued again saying why", r.Status, last)
	}

	c := replica(t, dsn, "c", true, jobs.WithInsecureRegistries(b.Registry))
	got := waitFinal(t, c.M, "alice", j.ID, 3*time.Minute)
	if got.Status != api.StatusSucceeded {
		t.Fatalf("build after another replica took it = %s (%s), want succeeded", got.Status, got.Error)
	}
	if r, _ := st.Get(j.ID); finals(r.Transitions) != 1 {
		t.Errorf("build has %d final transitions, want 1: %+v", finals(r.Transitions), r.Transitions)
	}
	jc, _ := c.M.Get("alice", j.ID)
	if log := logOf(t, jc); !strings.Contains(log, "queued again for another replica") || !strings.Contains(log, "running again on replica c (attempt 2)") {
		t.Errorf("log lacks the shutdown and the second run:\n%s", log)
	}
}

// TestReplicaLosesLease: a replica that finds its lease taken over (it
// was paused, say, not dead) stops the build it ran and writes nothing
// more of it; the replica that runs it again ends it, once.
func TestReplicaLosesLease(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	b := replica(t, dsn, "b", false)
	base := testenv.Busybox(t, b.Registry)
	j, err := b.M.Submit(ctx, jobs.SubmitRequest{Owner: "alice", Spec: api.BuildSpec{Destinations: []string{b.Registry + "/test/lease:v1"}}},
		bytes.NewReader(busyboxContext(t, base, "echo started; sleep 600")))
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, b.M)
	waitSharedLog(t, b.M, j.ID, "started")

	// Another replica finds b's lease expired and takes its build. b
	// renews its lease every second: one renewal landing between the
	// expiry and the takeover makes b the owner again, as it should, and
	// the test expires the lease once more.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	other, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for deadline := time.Now().Add(testenv.Scale(30 * time.Second)); ; {
		if _, err := conn.Exec(ctx, "UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = 'b'"); err != nil {
			t.Fatal(err)
		}
		taken, err := other.Takeover(ctx, func(_ context.Context, r *store.Record) []byte {
			r.Status = api.StatusQueued
			r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusQueued, At: time.Now(), Reason: "taken over by the test"})
			return nil
		})
		if err != nil || len(taken) > 1 {
			t.Fatalf("Takeover = %d builds, %v, want b's one", len(taken), err)
		}
		if len(taken) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Takeover found b's lease renewed every time: no build taken")
		}
	}
	// b notices at its next renewal, stops the build and serves again
	// under a new lease: it may be given the build again, as a second
	// attempt, once the first has ended here.
	waitSharedLog(t, b.M, j.ID, "running again on replica b (attempt 2)")
	if _, err := b.M.Cancel("alice", j.ID); err != nil {
		t.Fatalf("Cancel = %v", err)
	}
	if got := waitFinal(t, b.M, "alice", j.ID, time.Minute); got.Status != api.StatusCancelled {
		t.Errorf("build after Cancel = %s (%s), want cancelled", got.Status, got.Error)
	}
	// Nothing of either attempt runs on: the first was stopped when the
	// lease was lost, not left to its 600s sleep.
	deadline := time.Now().Add(testenv.Scale(time.Minute))
	for {
		if _, running := b.M.Stats(); running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b still runs a build a minute after the only one was cancelled")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r, err := other.Get(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := finals(r.Transitions); n != 1 || r.Status != api.StatusCancelled {
		t.Errorf("build = %s with %d final transitions, want cancelled once: %+v", r.Status, n, r.Transitions)
	}
}

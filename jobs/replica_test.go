package jobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"

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
	r, attempt, _, err := dead.Claim(ctx, "dead", nil)
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

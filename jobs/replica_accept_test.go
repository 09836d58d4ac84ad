package jobs_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/internal/testpg"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/pgstore"
	"github.com/buildgw/buildgw/jobs/store"
)

// lateCreate is the shared store, but Create returns a second after the
// build is stored: the moment between the build being claimable by any
// replica and the storing replica removing its upload's workspace, held
// open (a busy host opened it for one build in twenty in
// bench/replicas).
type lateCreate struct{ jobs.SharedStore }

func (s lateCreate) Create(ctx context.Context, r *store.Record, archive io.Reader) error {
	err := s.SharedStore.Create(ctx, r, archive)
	time.Sleep(time.Second)
	return err
}

// TestReplicaClaimsWhatItJustAccepted: a replica that claims the build
// it is still storing, its upload's workspace not yet removed, waits for
// that workspace to go instead of failing the build with "creating
// workspace: ... file exists".
func TestReplicaClaimsWhatItJustAccepted(t *testing.T) {
	dsn := testpg.Start(t).NewDatabase(t)
	s, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	a := testmanager.New(t, testmanager.Options{Builder: []jobs.Option{jobs.WithStore(lateCreate{s}), jobs.WithReplica("a", 3*time.Second)}})
	dest := a.Registry + "/test/claimed-here:v1"
	j, err := a.M.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice",
		Spec: api.BuildSpec{Destinations: []string{dest}}}, bytes.NewReader(scratchContext(t, "claimed here")))
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	got := waitFinal(t, a.M, "alice", j.ID, 2*time.Minute)
	if got.Status != api.StatusSucceeded {
		t.Fatalf("build stored and claimed by one replica = %s (%s), want succeeded", got.Status, got.Error)
	}
}

package jobs_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testpg"
	"github.com/buildgw/buildgw/jobs"
)

// barrierReader holds its first Read until every reader of its barrier
// has been asked for bytes: each submission has then looked its key up
// and found nothing.
type barrierReader struct {
	once    sync.Once
	arrived *sync.WaitGroup
	r       io.Reader
}

func (b *barrierReader) Read(p []byte) (int, error) {
	b.once.Do(func() {
		b.arrived.Done()
		b.arrived.Wait()
	})
	return b.r.Read(p)
}

// TestReplicasSameSubmissionAtOnce: a client's retry that reaches another
// replica while the first attempt is still uploading (both look the key
// up before either stores a build) gets the same build, and only one is
// stored.
func TestReplicasSameSubmissionAtOnce(t *testing.T) {
	dsn := testpg.Start(t).NewDatabase(t)
	a := replica(t, dsn, "a", false)
	b := replica(t, dsn, "b", false)
	var arrived sync.WaitGroup
	arrived.Add(2)
	ids := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, m := range []*jobs.Manager{a.M, b.M} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &barrierReader{arrived: &arrived, r: bytes.NewReader(scratchContext(t, "one submission"))}
			j, err := m.Submit(context.Background(), jobs.SubmitRequest{Owner: "alice", IdempotencyKey: "retry",
				Spec: api.BuildSpec{Destinations: []string{a.Registry + "/test/once:v1"}}}, r)
			if err == nil {
				ids[i] = j.ID
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Submit to replica %d = %v", i, err)
		}
	}
	if ids[0] != ids[1] {
		t.Errorf("Submit with one Idempotency-Key to two replicas at once = builds %s and %s, want one", ids[0], ids[1])
	}
	if l := a.M.List("alice"); len(l) != 1 {
		t.Errorf("List(alice) = %d builds, want 1", len(l))
	}
}

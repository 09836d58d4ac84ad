package jobs_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/store"
)

// TestResubmitInterrupted: the Idempotency-Key of a build that a restart
// interrupted starts a new build, which then owns the key, also after the
// interrupted one expires.
func TestResubmitInterrupted(t *testing.T) {
	if jobs.ErrRestarted.Error() != api.ErrRestarted {
		t.Fatalf("jobs.ErrRestarted = %q, api.ErrRestarted = %q: clients tell interrupted builds by the latter", jobs.ErrRestarted, api.ErrRestarted)
	}
	r := newRestartable(t)
	spec := api.BuildSpec{Destinations: []string{r.reg + "/test/resubmit:v1"}}
	ctxArchive := scratchContext(t, "x")

	m1, stop1 := r.start(t, false)
	first := submitTo(t, m1, "alice", "k", spec, ctxArchive)
	stop1()
	// As a restart long ago left it: failed, interrupted.
	st, err := store.Open(filepath.Join(r.dir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-2 * time.Hour)
	err = st.Update(first.ID, func(rec *store.Record) {
		rec.Status, rec.Error, rec.FinishedAt = api.StatusFailed, jobs.ErrRestarted.Error(), long
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	m2, stop2 := r.start(t, false)
	second := submitTo(t, m2, "alice", "k", spec, ctxArchive)
	if second.ID == first.ID {
		t.Fatalf("Submit with the key of an interrupted build = %s, want a new build", second.ID)
	}
	if again := submitTo(t, m2, "alice", "k", spec, ctxArchive); again.ID != second.ID {
		t.Errorf("Submit with the key again = %s, want %s", again.ID, second.ID)
	}
	stop2()

	// The interrupted build expires; the key stays with the new one.
	m3, _ := r.start(t, true, jobs.WithRetention(time.Hour))
	for deadline := time.Now().Add(testenv.Scale(15 * time.Second)); ; time.Sleep(50 * time.Millisecond) {
		if _, err := m3.Get("alice", first.ID); errors.Is(err, jobs.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("interrupted build %s still there 15s after its retention ended", first.ID)
		}
	}
	if again := submitTo(t, m3, "alice", "k", spec, ctxArchive); again.ID != second.ID {
		t.Errorf("Submit with the key after the interrupted build expired = %s, want %s", again.ID, second.ID)
	}
}

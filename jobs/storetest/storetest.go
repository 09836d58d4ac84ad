// Package storetest is the test suite every jobs.Store passes, run by
// each implementation's tests (as distribution's storage drivers share
// theirs): the embedded bbolt store and the PostgreSQL one must keep
// records alike.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/store"
)

// Open returns a new, empty store for one test; the test closes it.
type Open func(t *testing.T) jobs.Store

// Run runs the suite against the stores open makes.
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		f    func(t *testing.T, s jobs.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"NotFound", testNotFound},
		{"IdempotencyPerOwner", testIdempotencyPerOwner},
		{"IdempotencyKeyTakenOver", testIdempotencyKeyTakenOver},
		{"Delete", testDelete},
		{"Concurrent", testConcurrent},
		{"Ping", testPing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			tc.f(t, s)
		})
	}
}

// Record returns a queued record with every kind of field set.
func Record(id string) *store.Record {
	now := time.Unix(1700000000, 123000).UTC()
	return &store.Record{
		ID: id, Owner: "ci", LimitTenant: `["project","oidc","https://gitlab.example","g/a"]`, Identity: auth.Identity{Name: "ci", Kind: auth.KindToken, Attributes: map[string]string{"team": "a"}},
		Spec:            api.BuildSpec{Destinations: []string{"r.example/a:1"}, BuildArgs: map[string]string{"K": "v"}, Labels: map[string]string{"l": "1"}},
		Grant:           []byte(`{"Timeout":60000000000}`),
		ContextSHA256:   strings.Repeat("c", 64),
		ReadTokenSHA256: strings.Repeat("ab", 32),
		Status:          api.StatusQueued, CreatedAt: now, LogPath: "/logs/" + id + ".log", Workspace: "/jobs/" + id,
		Transitions: []store.Transition{{Status: api.StatusQueued, At: now}},
	}
}

func testRoundTrip(t *testing.T, s jobs.Store) {
	r := Record("a")
	r.IdempotencyKey = "k1"
	if err := s.Put(r); err != nil {
		t.Fatalf("Put(a) = %v", err)
	}
	got, err := s.Get("a")
	if err != nil {
		t.Fatalf("Get(a) = %v", err)
	}
	if !reflect.DeepEqual(normal(got), normal(r)) {
		t.Errorf("Get(a) = %+v, want %+v", got, r)
	}
	all, err := s.All()
	if err != nil || len(all) != 1 || all[0].ID != "a" {
		t.Errorf("All() = %d records, %v, want a alone", len(all), err)
	}
}

// normal makes the JSON-equal records DeepEqual: a store may give back
// the grant's bytes re-encoded.
func normal(r *store.Record) store.Record {
	c := *r
	c.Grant = []byte(strings.ReplaceAll(string(c.Grant), " ", ""))
	return c
}

func testOverwrite(t *testing.T, s jobs.Store) {
	r := Record("a")
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	fin := time.Unix(1700000100, 0).UTC()
	r.Status, r.Digest, r.FinishedAt = api.StatusSucceeded, "sha256:abc", fin
	r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusSucceeded, At: fin})
	if err := s.Put(r); err != nil {
		t.Fatalf("Put(a) again = %v", err)
	}
	got, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusSucceeded || got.Digest != "sha256:abc" || !got.FinishedAt.Equal(fin) || len(got.Transitions) != 2 {
		t.Errorf("Get(a) after the second Put = %+v, want the succeeded record", got)
	}
	if all, _ := s.All(); len(all) != 1 {
		t.Errorf("All() after two Puts of a = %d records, want 1", len(all))
	}
}

func testNotFound(t *testing.T, s jobs.Store) {
	if _, err := s.Get("missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(missing) = %v, want store.ErrNotFound", err)
	}
	if err := s.Delete("missing"); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
	if id, err := s.Idempotent("ci", "none"); err != nil || id != "" {
		t.Errorf("Idempotent(ci, none) = %q, %v, want none", id, err)
	}
}

func testIdempotencyPerOwner(t *testing.T, s jobs.Store) {
	r := Record("a")
	r.IdempotencyKey = "k1"
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Idempotent("ci", "k1"); err != nil || id != "a" {
		t.Errorf("Idempotent(ci, k1) = %q, %v, want a", id, err)
	}
	if id, _ := s.Idempotent("other", "k1"); id != "" {
		t.Errorf("Idempotent(other, k1) = %q, want none (keys are per owner)", id)
	}
}

// testIdempotencyKeyTakenOver: a build sent again after a restart
// interrupted the first takes over its idempotency key; expiring the
// first must not drop the key of the second.
func testIdempotencyKeyTakenOver(t *testing.T, s jobs.Store) {
	first, second := Record("first"), Record("second")
	first.IdempotencyKey, second.IdempotencyKey = "k", "k"
	for _, r := range []*store.Record{first, second} {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if id, err := s.Idempotent("ci", "k"); err != nil || id != "second" {
		t.Errorf("Idempotent(ci, k) = %q, %v, want second", id, err)
	}
	if err := s.Delete("first"); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Idempotent("ci", "k"); err != nil || id != "second" {
		t.Errorf("Idempotent(ci, k) after the first build expired = %q, %v, want second", id, err)
	}
}

func testDelete(t *testing.T, s jobs.Store) {
	for _, id := range []string{"a", "b", "c"} {
		r := Record(id)
		r.IdempotencyKey = "key-" + id
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete("a", "c"); err != nil {
		t.Fatalf("Delete(a, c) = %v", err)
	}
	for _, id := range []string{"a", "c"} {
		if _, err := s.Get(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%s) after Delete = %v, want store.ErrNotFound", id, err)
		}
		if got, _ := s.Idempotent("ci", "key-"+id); got != "" {
			t.Errorf("Idempotent(ci, key-%s) after Delete = %q, want none", id, got)
		}
	}
	all, err := s.All()
	if err != nil || len(all) != 1 || all[0].ID != "b" {
		t.Errorf("All() after Delete(a, c) = %d records, %v, want b alone", len(all), err)
	}
	if got, _ := s.Idempotent("ci", "key-b"); got != "b" {
		t.Errorf("Idempotent(ci, key-b) = %q, want b", got)
	}
}

// testConcurrent: transitions of many jobs at once all land.
func testConcurrent(t *testing.T, s jobs.Store) {
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Record(fmt.Sprint("j", i))
			for _, st := range []api.Status{api.StatusQueued, api.StatusRunning, api.StatusSucceeded} {
				r.Status = st
				if err := s.Put(r); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Put = %v", err)
	}
	all, err := s.All()
	if err != nil || len(all) != n {
		t.Fatalf("All() = %d records, %v, want %d", len(all), err, n)
	}
	for _, r := range all {
		if r.Status != api.StatusSucceeded {
			t.Errorf("job %s = %s, want succeeded (its last Put)", r.ID, r.Status)
		}
	}
}

func testPing(t *testing.T, s jobs.Store) {
	if err := s.Ping(); err != nil {
		t.Errorf("Ping() = %v", err)
	}
}

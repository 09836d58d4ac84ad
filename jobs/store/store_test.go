package store_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs/store"
)

func record(id string) *store.Record {
	now := time.Unix(1700000000, 0).UTC()
	return &store.Record{
		ID: id, Owner: "ci", Identity: auth.Identity{Name: "ci", Kind: auth.KindToken, Attributes: map[string]string{"team": "a"}},
		Spec:   api.BuildSpec{Destinations: []string{"r.example/a:1"}, BuildArgs: map[string]string{"K": "v"}},
		Status: api.StatusQueued, CreatedAt: now, LogPath: "/logs/" + id + ".log", Workspace: "/jobs/" + id,
		Transitions: []store.Transition{{Status: api.StatusQueued, At: now}},
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r := record("a")
	r.IdempotencyKey = "k1"
	if err := s.Put(r); err != nil {
		t.Fatalf("Put = %v", err)
	}
	fin := time.Unix(1700000100, 0).UTC()
	if err := s.Update("a", func(r *store.Record) {
		r.Status, r.Digest, r.FinishedAt = api.StatusSucceeded, "sha256:abc", fin
		r.Transitions = append(r.Transitions, store.Transition{Status: api.StatusSucceeded, At: fin})
	}); err != nil {
		t.Fatalf("Update = %v", err)
	}
	if err := s.Update("missing", func(*store.Record) {}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = store.Open(path)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s.Close()
	got, err := s.Get("a")
	if err != nil {
		t.Fatalf("Get(a) = %v", err)
	}
	if got.Status != api.StatusSucceeded || got.Digest != "sha256:abc" || !got.FinishedAt.Equal(fin) ||
		len(got.Transitions) != 2 || got.Identity.Attributes["team"] != "a" || got.Spec.BuildArgs["K"] != "v" {
		t.Errorf("Get(a) after reopen = %+v, want the updated record", got)
	}
	if id, err := s.Idempotent("ci", "k1"); err != nil || id != "a" {
		t.Errorf("Idempotent(ci, k1) = %q, %v, want a", id, err)
	}
	if id, _ := s.Idempotent("other", "k1"); id != "" {
		t.Errorf("Idempotent(other, k1) = %q, want none (keys are per owner)", id)
	}
	all, err := s.All()
	if err != nil || len(all) != 1 {
		t.Errorf("All() = %d records, %v, want 1", len(all), err)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(a) after Delete = %v, want ErrNotFound", err)
	}
	if id, _ := s.Idempotent("ci", "k1"); id != "" {
		t.Errorf("Idempotent(ci, k1) after Delete = %q, want none", id)
	}
	if err := s.Ping(); err != nil {
		t.Errorf("Ping() = %v", err)
	}
}

func TestStoreSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	// A database from a newer gateway is refused, not misread.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	newer := fmt.Sprint(store.SchemaVersion() + 1)
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("meta"))
		return b.Put([]byte("schema_version"), []byte(newer))
	})
	db.Close()
	if s, err := store.Open(path); err == nil {
		s.Close()
		t.Fatalf("Open(schema %s) = nil error, want a refusal", newer)
	}

	// A second opener of the same file fails instead of hanging.
	path2 := filepath.Join(t.TempDir(), "jobs.db")
	s, err := store.Open(path2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		s2, err := store.Open(path2)
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("second Open of a held store = nil error, want one")
		}
	case <-time.After(testenv.Scale(20 * time.Second)):
		t.Fatal("second Open of a held store hangs")
	}
}

// BenchmarkTransitions measures state transitions per second, each one a
// durable (fsynced) read-modify-write of a job record, from as many
// goroutines as a busy gateway has jobs and pollers.
func BenchmarkTransitions(b *testing.B) {
	for _, par := range []int{1, 32} {
		b.Run(fmt.Sprintf("parallelism=%d", par), func(b *testing.B) {
			s, err := store.Open(filepath.Join(b.TempDir(), "jobs.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const jobs = 512
			for i := range jobs {
				if err := s.Put(record(fmt.Sprint(i))); err != nil {
					b.Fatal(err)
				}
			}
			var n atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					err := s.Update(fmt.Sprint(i%jobs), func(r *store.Record) {
						r.Status = api.StatusRunning
						r.Transitions = append(r.Transitions[:1], store.Transition{Status: api.StatusRunning, At: time.Now()})
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "transitions/s")
		})
	}
}

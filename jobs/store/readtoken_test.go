package store_test

import (
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/buildgw/buildgw/jobs/store"
)

// TestIdempotencyKeyTakenOver: a build sent again after a restart
// interrupted the first takes over its idempotency key; expiring the
// first must not drop the key of the second.
func TestIdempotencyKeyTakenOver(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, second := record("first"), record("second")
	first.IdempotencyKey, second.IdempotencyKey = "k", "k"
	for _, r := range []*store.Record{first, second} {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete("first"); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Idempotent("ci", "k"); err != nil || id != "second" {
		t.Errorf("Idempotent(ci, k) after the first build expired = %q, %v, want second", id, err)
	}
}

// TestRecordWithoutReadToken: a record written before read tokens
// existed reads back with none.
func TestRecordWithoutReadToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := `{"id":"old","owner":"ci","identity":{"name":"ci","kind":"token"},"spec":{"destinations":["r.example/a:1"]},"context_sha256":"","dockerfile_sha256":"","status":"succeeded","created_at":"2023-11-14T22:13:20Z","transitions":[],"log_path":"/logs/old.log","workspace":""}`
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("jobs")).Put([]byte("old"), []byte(old)) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Get("old")
	if err != nil || r.ReadTokenSHA256 != "" || r.Owner != "ci" {
		t.Fatalf("Get(old) = %+v, %v, want the record with no read token", r, err)
	}
	r.ReadTokenSHA256 = strings.Repeat("ab", 32)
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get("old"); r.ReadTokenSHA256 != strings.Repeat("ab", 32) {
		t.Errorf("ReadTokenSHA256 after Put = %q, want it kept", r.ReadTokenSHA256)
	}
}

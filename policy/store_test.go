package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/internal/testenv"
)

func storePolicy(repo string) string {
	return fmt.Sprintf("rules:\n  - name: r\n    match: {kind: token}\n    allow: {destinations: [%s]}\n", repo)
}

// allows reports whether the store's current policy lets a token push to
// repo:1.
func allows(t *testing.T, s *Store, repo string) bool {
	t.Helper()
	return s.Policy().Decide(Request{
		Identity:     auth.Identity{Name: "t", Kind: auth.KindToken},
		Runner:       "kaniko",
		Destinations: tags(t, repo+":1"),
	}).Allowed
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write beside and rename, as editors and ConfigMaps do, so that a
	// reader never sees a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestStoreReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if _, err := NewStore(path); err == nil {
		t.Fatal("NewStore(missing file) = nil error, want one")
	}
	writeFile(t, path, "rules: [")
	if _, err := NewStore(path); err == nil {
		t.Fatal("NewStore(bad file) = nil error, want one")
	}

	writeFile(t, path, storePolicy("r.example.com/one"))
	s, err := NewStore(path)
	if err != nil {
		t.Fatalf("NewStore() = %v", err)
	}
	if !allows(t, s, "r.example.com/one") {
		t.Fatal("initial policy does not allow r.example.com/one")
	}
	old := s.Policy()

	writeFile(t, path, storePolicy("r.example.com/two")+"    bogus: 1\n")
	if err := s.Reload(); err == nil {
		t.Error("Reload(bad file) = nil, want an error")
	}
	if s.Policy() != old {
		t.Error("Reload(bad file) replaced the policy, want the old one kept")
	}

	os.Remove(path)
	if err := s.Reload(); err == nil {
		t.Error("Reload(missing file) = nil, want an error")
	}
	if s.Policy() != old {
		t.Error("Reload(missing file) replaced the policy, want the old one kept")
	}

	writeFile(t, path, storePolicy("r.example.com/two"))
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload(good file) = %v", err)
	}
	if allows(t, s, "r.example.com/one") || !allows(t, s, "r.example.com/two") {
		t.Error("Reload(good file) did not swap in the new policy")
	}
}

func TestStoreWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, storePolicy("r.example.com/one"))
	s, err := NewStore(path)
	if err != nil {
		t.Fatalf("NewStore() = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		s.Watch(ctx, nil, 5*time.Millisecond)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		d := testenv.Scale(5 * time.Second)
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("Watch did not %s within %s", what, d)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	writeFile(t, path, storePolicy("r.example.com/two"))
	waitFor("load the changed file", func() bool { return allows(t, s, "r.example.com/two") })

	// A bad edit keeps the current policy; the next good one is loaded.
	good := s.Policy()
	writeFile(t, path, "rules: [")
	time.Sleep(50 * time.Millisecond)
	if s.Policy() != good {
		t.Fatal("Watch replaced the policy with a bad file")
	}
	writeFile(t, path, storePolicy("r.example.com/three"))
	waitFor("load the fixed file", func() bool { return allows(t, s, "r.example.com/three") })

	// Same size: the inode still changes.
	writeFile(t, path, storePolicy("r.example.com/seven"))
	waitFor("load a same-size file", func() bool { return allows(t, s, "r.example.com/seven") })

	// Written in place: size and mtime change.
	if err := os.WriteFile(path, []byte(storePolicy("r.example.com/in-place")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("load a file written in place", func() bool { return allows(t, s, "r.example.com/in-place") })
}

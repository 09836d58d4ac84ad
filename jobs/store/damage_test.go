package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/buildgw/buildgw/jobs/store"
)

// fullStore returns a closed job store holding enough records to span
// many pages, and the page of the jobs bucket's root.
func fullStore(t *testing.T) (string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		r := record(fmt.Sprintf("job%04d", i))
		r.Error = strings.Repeat("x", 300)
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket([]byte("jobs")).Root())
		return nil
	})
	db.Close()
	if root < 2 {
		t.Fatalf("jobs bucket root page = %d, want a page of its own", root)
	}
	return path, root
}

// TestOpenDamaged: a damaged job store is an error naming the file, the
// damage and the way out, never a panic.
func TestOpenDamaged(t *testing.T) {
	const pageSize = 4096 // bbolt's default on this architecture
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, root uint64)
	}{
		{"truncated to 16 KiB", func(t *testing.T, path string, _ uint64) {
			if err := os.Truncate(path, 16<<10); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated by half", func(t *testing.T, path string, _ uint64) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2/pageSize*pageSize); err != nil {
				t.Fatal(err)
			}
		}},
		{"page header flags", func(t *testing.T, path string, root uint64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// A page header is id (8 bytes), flags (2), count (2), overflow (4).
			if _, err := f.WriteAt(binary.LittleEndian.AppendUint16(nil, 0x77), int64(root)*pageSize+8); err != nil {
				t.Fatal(err)
			}
		}},
		{"page header count", func(t *testing.T, path string, root uint64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(binary.LittleEndian.AppendUint16(nil, 0xfff0), int64(root)*pageSize+10); err != nil {
				t.Fatal(err)
			}
		}},
		{"both meta pages", func(t *testing.T, path string, _ uint64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, off := range []int64{16, pageSize + 16} {
				f.WriteAt(bytes.Repeat([]byte{0xab}, 64), off)
			}
		}},
	}
	good, root := fullStore(t)
	content, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jobs.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path, root)
			s, err := store.Open(path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) = a store, want an error saying it is damaged", tc.name)
			}
			var de *store.DamagedError
			if !errors.As(err, &de) {
				t.Fatalf("Open(%s) = %v, want a *store.DamagedError", tc.name, err)
			}
			for _, want := range []string{path, "damaged", "backup", "--accept-empty-store"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Open(%s) = %q, want it to name %q", tc.name, err, want)
				}
			}
			t.Logf("Open(%s) = %v", tc.name, err)
		})
	}
}

package store_test

import (
	"path/filepath"
	"testing"

	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/store"
	"github.com/buildgw/buildgw/jobs/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) jobs.Store {
		s, err := store.Open(filepath.Join(t.TempDir(), "jobs.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

package pgstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/buildgw/buildgw/internal/testpg"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/jobs/pgstore"
	"github.com/buildgw/buildgw/jobs/storetest"
)

func TestSuite(t *testing.T) {
	srv := testpg.Start(t)
	storetest.Run(t, func(t *testing.T) jobs.Store {
		s, err := pgstore.Open(context.Background(), srv.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestSchema: Open migrates a new database, opens a current one again,
// and refuses one a newer gateway migrated.
func TestSchema(t *testing.T) {
	ctx := context.Background()
	dsn := testpg.Start(t).NewDatabase(t)
	for range 2 {
		s, err := pgstore.Open(ctx, dsn)
		if err != nil {
			t.Fatalf("Open = %v", err)
		}
		s.Close()
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, "SELECT version FROM schema_migrations").Scan(&v); err != nil || v != pgstore.SchemaVersion() {
		t.Fatalf("schema version = %d, %v, want %d", v, err, pgstore.SchemaVersion())
	}
	if _, err := c.Exec(ctx, "UPDATE schema_migrations SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstore.Open(ctx, dsn); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open(newer schema) = %v, want an error saying it is newer", err)
	}
}

// TestOpenHidesDSN: a bad DSN's error does not quote it (it may hold a
// password).
func TestOpenHidesDSN(t *testing.T) {
	_, err := pgstore.Open(context.Background(), "postgres://u:s3cret-pw@/db?host=/nonexistent&sslmode=bogus")
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("Open(bad DSN) = %v, want an error without the password", err)
	}
}

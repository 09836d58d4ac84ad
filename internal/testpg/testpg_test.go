package testpg_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/buildgw/buildgw/internal/testpg"
)

func TestStart(t *testing.T) {
	start := time.Now()
	s := testpg.Start(t)
	t.Logf("started in %s", time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var listen string
	if err := c.QueryRow(ctx, "SELECT current_setting('listen_addresses')").Scan(&listen); err != nil {
		t.Fatal(err)
	}
	if listen != "" {
		t.Errorf("listen_addresses = %q, want none (a unix socket only)", listen)
	}
	// As root, the server runs as nobody: postgres refuses root.
	fi, err := os.Stat(s.Dir + "/data")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 && fi.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Errorf("data directory owned by root, want the unprivileged server user")
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("writing: %v", err)
	}
}

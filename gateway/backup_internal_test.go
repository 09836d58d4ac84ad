package gateway

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs/store"
)

// TestBackupStalledReaderCut: a client of the backup socket that stops
// reading is cut within the write bound, so the copy's read transaction
// ends, and a write of the store that must grow its file goes through
// instead of waiting for the client for ever.
func TestBackupStalledReaderCut(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond

	dir := testenv.StateDir(t)
	st, err := store.Open(filepath.Join(dir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Far more than the socket's buffers hold: the copy waits for the
	// client.
	put := func(id string, size int) error {
		return st.Put(&store.Record{ID: id, Owner: "ci", Status: api.StatusFailed, Error: strings.Repeat("x", size), CreatedAt: time.Now()})
	}
	if err := put("big", 4<<20); err != nil {
		t.Fatal(err)
	}
	stop, err := serveBackups(dir, st.Backup, writeTimeout, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	conn, err := net.Dial("unix", backupSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /jobs.db HTTP/1.1\r\nHost: gateway\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The answer has begun: the copy's transaction is open. Then the
	// client reads no more.
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /jobs.db = %v, %v, want 200", resp, err)
	}

	// Larger than the whole store: bbolt must grow its mapping, which
	// waits for every read transaction to end.
	start := time.Now()
	wrote := make(chan error, 1)
	go func() { wrote <- put("bigger", 8<<20) }()
	bound := testenv.Scale(10 * time.Second)
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("Put while a backup client stalls = %v", err)
		}
		t.Logf("Put went through %s after the backup client stopped reading", time.Since(start).Round(time.Millisecond))
	case <-time.After(bound):
		// Cut the client, so the Put ends before the store is closed.
		conn.Close()
		<-wrote
		t.Fatalf("Put while a backup client stalls took more than %s, want the client cut after %s", bound, writeTimeout)
	}

	// The client was cut: what it reads now ends before the copy's length.
	conn.SetReadDeadline(time.Now().Add(bound))
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= resp.ContentLength {
		t.Errorf("reading the rest of the stalled copy = %d of %d bytes, %v, want it cut short", n, resp.ContentLength, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("reading the rest of the stalled copy: %v, want the gateway to have closed the connection", err)
	}
}

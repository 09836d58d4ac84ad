package testenv

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// Trickle is a request body sent in pieces of Size bytes, one every
// Interval, as a slow client sends it.
type Trickle struct {
	B        []byte
	Size     int
	Interval time.Duration
	sent     bool
}

func (r *Trickle) Read(p []byte) (int, error) {
	if len(r.B) == 0 {
		return 0, io.EOF
	}
	if r.sent {
		time.Sleep(r.Interval) // the trickle itself, not a wait
	}
	r.sent = true
	n := copy(p[:min(len(p), r.Size)], r.B)
	r.B = r.B[n:]
	return n, nil
}

// ClosedWithin reads r, what is left of conn, until the server closes
// conn, and fails t unless that happens within d. It returns how long it
// took. A server holding a silent client's connection open is what the
// tests of connection bounds look for.
func ClosedWithin(t testing.TB, conn net.Conn, r io.Reader, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, r)
	took := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection still open after %s, want it closed by the server", took.Round(time.Millisecond))
	}
	return took
}

// RawRequest writes head, a request's line and headers as a client that
// may then fall silent sends them, to conn and reads the answer, its body
// drained. The reader holds what is left of conn, for ClosedWithin.
func RawRequest(t testing.TB, conn net.Conn, head string) (*http.Response, *bufio.Reader, error) {
	t.Helper()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, br, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, br, nil
}

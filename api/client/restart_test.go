package client_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestLogsWaitsOutRestart: a followed log whose gateway shuts down (the
// stream's last line says so, the trailer says where the log stands) and
// is away for longer than the client's request retries is picked up again
// from the right offset once the gateway is back.
func TestLogsWaitsOutRestart(t *testing.T) {
	const marker = "#buildgw gateway shutting down; reattach with: buildctl-lite logs -f b1\n"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var mu sync.Mutex
	var offsets []string
	stream := func(w http.ResponseWriter, r *http.Request, body, next string, shutting bool) {
		mu.Lock()
		offsets = append(offsets, r.URL.Query().Get("offset"))
		mu.Unlock()
		w.Header().Set("Trailer", api.LogOffsetTrailer)
		io.WriteString(w, body)
		if shutting {
			io.WriteString(w, marker)
		}
		w.Header().Set(api.LogOffsetTrailer, next)
	}
	// The gateway goes away as its stream ends (no new connections), for
	// longer than the client's own retries last, then comes back on the
	// same address.
	before := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ln.Close()
		stream(w, r, "one\n", "4", true)
	})}
	before.SetKeepAlivesEnabled(false)
	go before.Serve(ln)
	defer before.Close()

	var notices []string
	c, err := client.New("http://"+addr, "tok", client.WithRetries(1, 10*time.Millisecond), client.WithRestartWait(time.Minute),
		client.WithWaitNotice(func(d time.Duration, reason string) {
			mu.Lock()
			defer mu.Unlock()
			notices = append(notices, reason)
		}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	done := make(chan error, 1)
	go func() { done <- c.Logs(context.Background(), "b1", true, &out) }()

	noticed := testenv.Scale(10 * time.Second)
	for deadline := time.Now().Add(noticed); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(notices)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d wait notices %s after the gateway went away, want 2", n, noticed)
		}
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	after := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/logs") {
			stream(w, r, "two\n", "8", false)
			return
		}
		fmt.Fprint(w, `{"id":"b1","status":"succeeded"}`)
	})}
	go after.Serve(ln2)
	defer after.Close()

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Logs across a restart = %v, want nil", err)
		}
	case <-time.After(testenv.Scale(30 * time.Second)):
		t.Fatalf("Logs still waiting %s after the gateway came back", testenv.Scale(30*time.Second))
	}
	if want := "one\n" + marker + "two\n"; out.String() != want {
		t.Errorf("Logs across a restart wrote %q, want %q", out.String(), want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(offsets) != 2 || offsets[1] != "4" {
		t.Errorf("log requests' offsets = %q, want [0 4]: resume where the log, not the stream, left off", offsets)
	}
	if !strings.Contains(notices[0], "gateway unreachable") || !strings.Contains(notices[0], "b1") {
		t.Errorf("wait notice = %q, want it to say the gateway is unreachable and name the build", notices[0])
	}
}

package server_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
)

// dialSmall connects to the test server at url with a receive buffer of
// a few KiB, so that a client that stops reading soon stops the
// server's writes.
func dialSmall(t *testing.T, url string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stalledResponse sends req on a connection whose client then reads
// nothing for longer than the gateway may take to give up a write, and
// reports whether the gateway closed it then: what is left arrives and
// ends, rather than going on.
func stalledResponse(t *testing.T, url, req string, bound time.Duration) {
	t.Helper()
	conn := dialSmall(t, url)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	time.Sleep(bound + testenv.Scale(3*time.Second)) // the silence itself, not a wait
	testenv.ClosedWithin(t, conn, conn, testenv.Scale(5*time.Second))
}

// TestStalledDownloadClosed: anyone may download the client binary; one
// who stops reading has the connection closed within the write window
// plus the binary's size at the minimum rate, while one who reads gets
// it whole.
func TestStalledDownloadClosed(t *testing.T) {
	dir := t.TempDir()
	bin := make([]byte, 16<<20)
	rand.Read(bin)
	name := "buildctl-lite-" + runtime.GOOS + "-" + runtime.GOARCH
	if err := os.WriteFile(filepath.Join(dir, name), bin, 0o644); err != nil {
		t.Fatal(err)
	}
	// 16 MiB within 1s + 0.5s.
	rate := server.WriteRate{MinBytesPerSecond: 32 << 20, Window: time.Second}
	g := newGateway(t, gwOptions{noWorkers: true, server: []server.Option{server.WithDownloads(dir), server.WithWriteRate(rate)}})
	path := "/dl/buildctl-lite/" + runtime.GOOS + "/" + runtime.GOARCH

	r := do(t, http.MethodGet, g.url+path, "", "", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, bin) {
		t.Fatalf("GET %s = %d with %d bytes, want 200 with the %d bytes of the binary", path, r.status, len(r.body), len(bin))
	}
	stalledResponse(t, g.url, "GET "+path+" HTTP/1.1\r\nHost: gw\r\n\r\n", 1500*time.Millisecond)
}

// TestStalledListClosed: any other answer to a client that stops
// reading, here the list of the caller's builds, is given up once a
// write has waited for the write window plus its size at the minimum
// rate, and the connection closed: the client holds neither the
// connection nor the encoded list for longer. The client asks for the
// list again and again without reading, so that the answers fill what
// the connection buffers.
func TestStalledListClosed(t *testing.T) {
	rate := server.WriteRate{MinBytesPerSecond: 32 << 20, Window: time.Second}
	g := newGateway(t, gwOptions{noWorkers: true, server: []server.Option{server.WithWriteRate(rate)}})
	// 8 builds of 32 long destinations: a list of about 60 KiB.
	for i := range 8 {
		dests := make([]string, 32)
		for k := range dests {
			dests[k] = g.dest(fmt.Sprintf("%s-%d-%d", strings.Repeat("l", 200), i, k))
		}
		if r := g.submit(t, aliceToken, curlBody(specJSON(dests...), scratchContext(t))); r.status != http.StatusAccepted {
			t.Fatalf("POST /v1/builds = %d %s, want 202", r.status, r.body)
		}
	}
	r := do(t, http.MethodGet, g.url+"/v1/builds", aliceToken, "", nil)
	if r.status != http.StatusOK || len(r.body) < 32<<10 {
		t.Fatalf("GET /v1/builds = %d with %d bytes, want 200 with the 8 builds", r.status, len(r.body))
	}
	// 16 MiB of answers, beyond what loopback buffers.
	req := fmt.Sprintf("GET /v1/builds HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n", aliceToken)
	stalledResponse(t, g.url, strings.Repeat(req, 16<<20/len(r.body)+1), time.Second)
}

// TestStalledLogStreamClosed: a log stream whose client stops reading is
// closed once a write has waited for the write window, even though the
// build goes on; one that reads, and one idle between writes for longer
// than the window, keep streaming.
func TestStalledLogStreamClosed(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true, builder: []jobs.Option{jobs.WithLogLimit(64 << 20)},
		server: []server.Option{server.WithWriteRate(server.WriteRate{Window: time.Second})}})
	r := g.submit(t, aliceToken, curlBody(specJSON(g.dest("stalled")), scratchContext(t)))
	var acc api.Accepted
	if err := json.Unmarshal(r.body, &acc); err != nil || r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/builds = %d %s, want 202", r.status, r.body)
	}
	j, err := g.m.Get("alice", acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 1023) + "\n"
	for range 8 << 10 { // 8 MiB
		j.Log.Write([]byte(line))
	}
	logs := "/v1/builds/" + acc.ID + "/logs?follow=1"

	// A reader: the 8 MiB (after what the gateway logged), then, after
	// a pause longer than the window, the next line.
	req, _ := http.NewRequest(http.MethodGet, g.url+logs, nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if n, err := io.CopyN(io.Discard, br, 8<<20); err != nil {
		t.Fatalf("GET %s: %d bytes, %v; want 8 MiB", logs, n, err)
	}
	time.Sleep(1500 * time.Millisecond) // idle, longer than the window
	j.Log.Write([]byte("after the pause\n"))
	got := make(chan string, 1)
	go func() {
		for {
			l, err := br.ReadString('\n')
			if l == "after the pause\n" || err != nil {
				got <- l
				return
			}
		}
	}()
	select {
	case l := <-got:
		if l != "after the pause\n" {
			t.Errorf("GET %s after an idle pause: %q, want %q", logs, l, "after the pause\n")
		}
	case <-time.After(testenv.Scale(10 * time.Second)):
		t.Errorf("GET %s: no line after an idle pause", logs)
	}

	stalledResponse(t, g.url, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n", logs, aliceToken), time.Second)
}

// TestUnboundedUploadBodyBounded: with no minimum upload rate,
// request_body_timeout still bounds a submission's body until the
// manager reads its context, after its checks: a client that stops
// before (the spec unsent), or whose submission is refused (the queue
// full; net/http reads the rest of its body before it answers), is
// answered and closed within it.
func TestUnboundedUploadBodyBounded(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true, builder: []jobs.Option{jobs.WithMaxQueued(2, 1)},
		server: []server.Option{server.WithBodyTimeout(time.Second)}})
	if r := g.submit(t, aliceToken, curlBody(specJSON(g.dest("first")), scratchContext(t))); r.status != http.StatusAccepted {
		t.Fatalf("first POST /v1/builds = %d %s, want 202", r.status, r.body)
	}
	body, ct := multipartBody(t, curlBody(specJSON(g.dest("refused")), scratchContext(t)))
	ctxPart := bytes.Index(body, []byte(`name="context"`))
	tests := []struct {
		name string
		sent int // bytes of body sent
		want int
	}{
		{"spec unsent", 0, http.StatusBadRequest},
		{"refused by the queue", ctxPart + bytes.Index(body[ctxPart:], []byte("\r\n\r\n")) + 4 + 10, http.StatusTooManyRequests},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialSmall(t, g.url)
			limit := time.Second + testenv.Scale(5*time.Second)
			conn.SetDeadline(time.Now().Add(limit))
			if _, err := fmt.Fprintf(conn, "POST /v1/builds HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
				aliceToken, ct, len(body), body[:tc.sent]); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("POST /v1/builds with %d of %d bytes sent: %v after %s, want %d within the body timeout (1s)", tc.sent, len(body), err, time.Since(start).Round(time.Millisecond), tc.want)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("POST /v1/builds with %d of %d bytes sent = %d, want %d", tc.sent, len(body), resp.StatusCode, tc.want)
			}
			testenv.ClosedWithin(t, conn, br, limit-time.Since(start))
		})
	}
}

package gateway_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// slowUpload is one POST /v1/builds that sends its spec at once and then
// trickles its context, a byte every 100ms, until the gateway answers or
// the test ends.
type slowUpload struct {
	mu   sync.Mutex
	resp *http.Response
	body api.ErrorBody
	at   time.Duration // when the answer came, after the start
}

func startSlowUpload(t *testing.T, addr, bearer, dest string) *slowUpload {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var ctx bytes.Buffer
	tw := tar.NewWriter(&ctx)
	tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg})
	ctx.Write(make([]byte, 4096))
	const boundary = "slowslowslow"
	head := fmt.Sprintf("--%[1]s\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{\"destinations\":[%[2]q]}\r\n"+
		"--%[1]s\r\nContent-Disposition: form-data; name=\"context\"; filename=\"c.tar\"\r\n\r\n", boundary, dest)
	req := fmt.Sprintf("POST /v1/builds HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		addr, bearer, boundary, len(head)+(2<<20), head)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	u := &slowUpload{}
	start := time.Now()
	go func() {
		for _, c := range ctx.Bytes() {
			if _, err := conn.Write([]byte{c}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // the trickle itself, not a wait
		}
	}()
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return
		}
		var eb api.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		u.mu.Lock()
		u.resp, u.body, u.at = resp, eb, time.Since(start)
		u.mu.Unlock()
	}()
	return u
}

func (u *slowUpload) answer() (*http.Response, api.ErrorBody, time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.resp, u.body, u.at
}

// TestSlowUploadFlood has identity a open many uploads that trickle a
// byte at a time and checks that it cannot keep identity b out: a holds
// no more than its share of the queue, everything beyond is refused at
// once naming the bound, its trickles are cut off naming the minimum
// rate, and b's build is accepted at once meanwhile.
func TestSlowUploadFlood(t *testing.T) {
	testenv.RequireSandbox(t)
	reg := testenv.Registry(t)
	toks := map[string]string{"a": "bgw_flood_a_" + randHex(t), "b": "bgw_flood_b_" + randHex(t)}
	cfg := testConfig(t, toks["a"], fmt.Sprintf(`rules:
  - name: teams
    match: {kind: token}
    allow:
      destinations: ["%s/t/**"]
`, reg))
	cfg.Tokens = []gateway.Token{{Name: "a", SHA256: token.HashToken(toks["a"])}, {Name: "b", SHA256: token.HashToken(toks["b"])}}
	// The default share of one identity is a tenth of max_queued: 2.
	cfg.Queue.MaxQueued = 20
	cfg.Context.MinUploadBytesPerSecond = 1024
	cfg.Context.UploadRateWindow = gateway.Duration(2 * time.Second)
	g, err := gateway.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	serve(t, g)
	e := &authzEnv{url: g.URL(), client: &http.Client{Timeout: testenv.Scale(30 * time.Second)}}
	waitHealthy(t, e.client, e.url)
	addr := strings.TrimPrefix(e.url, "http://")

	const flood = 25
	var ups []*slowUpload
	for range flood {
		ups = append(ups, startSlowUpload(t, addr, toks["a"], reg+"/t/a:1"))
	}
	// Everything beyond a's share is refused at once.
	refused := func() (n int) {
		for _, u := range ups {
			if r, _, _ := u.answer(); r != nil && r.StatusCode == http.StatusTooManyRequests {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(testenv.Scale(15 * time.Second))
	for refused() < flood-2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := refused(); n != flood-2 {
		t.Fatalf("%d of %d slow uploads of one identity refused with 429, want all but its share of 2", n, flood)
	}
	for _, u := range ups {
		if r, eb, _ := u.answer(); r != nil && (eb.Error.Code != api.CodeQueueFull || !strings.Contains(eb.Error.Message, "max_queued_per_identity")) {
			t.Errorf("refused slow upload: %d %+v, want QUEUE_FULL naming max_queued_per_identity", r.StatusCode, eb.Error)
			break
		}
	}

	// b's build is accepted at once while a's uploads still trickle.
	start := time.Now()
	r := request{bearer: toks["b"], dockerfile: "FROM scratch\nCOPY hello.txt /hello.txt\n", spec: api.BuildSpec{Destinations: []string{reg + "/t/b:1"}}}
	got := e.submit(t, r)
	if got.status != http.StatusAccepted || time.Since(start) > testenv.Scale(5*time.Second) {
		t.Fatalf("POST /v1/builds of b during the flood = %d %s %q after %s, want 202 at once", got.status, got.code, got.msg, time.Since(start))
	}
	e.cancel(t, r, got.id)

	// a's two trickles are cut off for their rate.
	answered := testenv.Scale(15 * time.Second)
	deadline = time.Now().Add(answered)
	for time.Now().Before(deadline) {
		done := 0
		for _, u := range ups {
			if r, _, _ := u.answer(); r != nil {
				done++
			}
		}
		if done == flood {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, u := range ups {
		resp, eb, at := u.answer()
		switch {
		case resp == nil:
			t.Errorf("a slow upload has no answer %s after b's build: want 408", answered)
		case resp.StatusCode == http.StatusTooManyRequests:
		case resp.StatusCode != http.StatusRequestTimeout || eb.Error.Code != api.CodeTooSlow || !strings.Contains(eb.Error.Message, "min_upload_bytes_per_second 1024"):
			t.Errorf("slow upload = %d %+v, want 408 TOO_SLOW naming min_upload_bytes_per_second", resp.StatusCode, eb.Error)
		case at > testenv.Scale(10*time.Second):
			t.Errorf("slow upload cut off after %s, want about one window (2s)", at)
		}
	}
}

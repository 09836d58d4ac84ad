package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
)

// TestDrainReadyz: while the gateway drains, /readyz answers 503 in the
// shape of api.Readiness, its checks kept, not ready and shutting down,
// so that a probe reading the answer needs no second format.
func TestDrainReadyz(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{NoWorkers: true})
	authn, err := token.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := newDrain(server.New(te.M, authn, nil), func(string) bool { return true }, time.Second)
	d.start()
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var got api.Readiness
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("GET /readyz while draining = %d %s (%v), want 503 and an api.Readiness", rec.Code, rec.Body, err)
	}
	if got.Ready || !got.ShuttingDown || got.Store != "ok" || got.Runners["kaniko"] != "ok" || !slices.Equal(got.Failing, []string{"shutting_down"}) {
		t.Errorf("GET /readyz while draining = %+v, want not ready, shutting down, store and kaniko ok, failing [shutting_down]", got)
	}
}

// TestDrainSubmitUnsentBody: a submission that declares a body and never
// sends it, while the gateway drains, is answered 503 and its connection
// closed within the body timeout. The drain answers before the API sets
// its body deadline, and net/http would otherwise read what is left of a
// small body, with no deadline, before sending the answer.
func TestDrainSubmitUnsentBody(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{NoWorkers: true})
	authn, err := token.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	const bodyTimeout = time.Second
	d := newDrain(server.New(te.M, authn, nil), func(string) bool { return true }, bodyTimeout)
	d.start()
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	limit := bodyTimeout + testenv.Scale(5*time.Second)
	conn.SetDeadline(time.Now().Add(limit))
	resp, br, err := testenv.RawRequest(t, conn, fmt.Sprintf("POST /v1/builds HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n", addr))
	if err != nil {
		t.Fatalf("POST /v1/builds with an unsent body while draining: %v, want a 503 within request_body_timeout", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("POST /v1/builds while draining = %d (close %t), want 503 closing the connection", resp.StatusCode, resp.Close)
	}
	testenv.ClosedWithin(t, conn, br, limit)
}

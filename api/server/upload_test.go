package server_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testmanager"
)

// TestUploadRate checks that an upload that stops sending is cut off
// after one window with 408 TOO_SLOW naming the setting, while an
// ordinary one is accepted.
func TestUploadRate(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{NoWorkers: true})
	a, err := token.New([]token.Token{{Name: "alice", SHA256: token.HashToken(aliceToken)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(te.M, a, nil, server.WithUploadRate(server.UploadRate{MinBytesPerSecond: 1024, Window: time.Second})))
	t.Cleanup(srv.Close)
	dest := te.Registry + "/test/rate:v1"

	body, ct := multipartBody(t, curlBody(specJSON(dest), scratchContext(t)))
	if r := do(t, http.MethodPost, srv.URL+"/v1/builds", aliceToken, ct, bytes.NewReader(body)); r.status != http.StatusAccepted {
		t.Fatalf("ordinary upload = %d %s, want 202", r.status, r.body)
	}

	// The same body cut in the middle of the context, then silence.
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go pw.Write(body[:len(body)-200])
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/builds", pr)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	req.Header.Set("Content-Type", ct)
	req.ContentLength = int64(len(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stalled upload: %v, want an answer", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{resp.StatusCode, resp.Header, b}
	if eb := r.errorBody(t); r.status != http.StatusRequestTimeout || eb.Error.Code != api.CodeTooSlow || !strings.Contains(eb.Error.Message, "upload stalled: no data for 1s") {
		t.Errorf("stalled upload = %d %+v, want 408 %s naming the window", r.status, eb.Error, api.CodeTooSlow)
	}
	if d := time.Since(start); d > testenv.Scale(10*time.Second) {
		t.Errorf("stalled upload answered after %s, want about 1s", d)
	}
}

package server_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/jobs"
)

func TestQueueFull(t *testing.T) {
	// No workers: accepted builds stay queued, so the queue fills.
	g := newGateway(t, gwOptions{noWorkers: true, builder: []jobs.Option{jobs.WithMaxQueued(2, 1)}})
	tests := []struct {
		name, token string
		wantStatus  int
		wantMessage string
	}{
		{"first of alice", aliceToken, http.StatusAccepted, ""},
		{"second of alice: her own bound", aliceToken, http.StatusTooManyRequests, "its policy tenant, already has 1 builds waiting"},
		{"first of bob", bobToken, http.StatusAccepted, ""},
		{"second of bob: the gateway's bound", bobToken, http.StatusTooManyRequests, "2 builds are waiting"},
	}
	for _, tc := range tests {
		r := g.submit(t, tc.token, curlBody(specJSON(g.dest("full")), scratchContext(t)))
		if r.status != tc.wantStatus {
			t.Fatalf("%s: POST /v1/builds = %d %s, want %d", tc.name, r.status, r.body, tc.wantStatus)
		}
		if tc.wantStatus != http.StatusTooManyRequests {
			continue
		}
		eb := r.errorBody(t)
		if eb.Error.Code != api.CodeQueueFull || !strings.Contains(eb.Error.Message, tc.wantMessage) {
			t.Errorf("%s: error = %+v, want %s naming %q", tc.name, eb.Error, api.CodeQueueFull, tc.wantMessage)
		}
		if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
			t.Errorf("%s: Retry-After = %q, want seconds between 1 and 60", tc.name, r.header.Get("Retry-After"))
		}
	}
}

func TestReadyz(t *testing.T) {
	tests := []struct {
		name       string
		minFree    uint64
		wantStatus int
		wantBody   string
	}{
		{"enough space", 1 << 20, http.StatusOK, `"store":"ok"`},
		{"below the threshold", 1 << 62, http.StatusServiceUnavailable, "below the"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, gwOptions{noWorkers: true, builder: []jobs.Option{jobs.WithMinFreeBytes(tc.minFree)}})
			r := do(t, http.MethodGet, g.url+"/readyz", "", "", nil)
			if r.status != tc.wantStatus || !strings.Contains(string(r.body), tc.wantBody) {
				t.Errorf("GET /readyz = %d %s, want %d with %q", r.status, r.body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

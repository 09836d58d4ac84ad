package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/builder"
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
		name        string
		minFree     uint64
		wantStatus  int
		wantFailing []string
		wantLog     string // in the gateway's log, never in the answer
	}{
		{"enough space", 1 << 20, http.StatusOK, nil, ""},
		{"below the threshold", 1 << 62, http.StatusServiceUnavailable, []string{"disk"}, "MiB free, below the"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			g := newGateway(t, gwOptions{noWorkers: true, log: slog.New(slog.NewTextHandler(&logs, nil)), builder: []jobs.Option{jobs.WithMinFreeBytes(tc.minFree)}})
			r := do(t, http.MethodGet, g.url+"/readyz", "", "", nil)
			var got api.Readiness
			if err := json.Unmarshal(r.body, &got); err != nil || r.status != tc.wantStatus || !slices.Equal(got.Failing, tc.wantFailing) {
				t.Errorf("GET /readyz = %d %s (%v), want %d failing %q", r.status, r.body, err, tc.wantStatus, tc.wantFailing)
			}
			if tc.wantLog == "" {
				return
			}
			if strings.Contains(string(r.body), tc.wantLog) || strings.Contains(string(r.body), g.stateDir) {
				t.Errorf("GET /readyz = %s, want neither %q nor the state directory in it", r.body, tc.wantLog)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("gateway log = %q, want the reason %q", logs.String(), tc.wantLog)
			}
		})
	}
}

// checkedRunner is a runner whose availability check is the test's own;
// nothing is built on it.
type checkedRunner struct {
	builder.Runner
	check func(context.Context) error
}

func (r checkedRunner) Available(ctx context.Context) error { return r.check(ctx) }

// TestReadyzFlood: /readyz needs no authentication, so a flood of it
// must neither run a check per request (they write the job store, may
// ask the Kubernetes API server) nor tell anyone what a failing check
// found; the gateway logs that, once.
func TestReadyzFlood(t *testing.T) {
	const hidden = "/srv/hidden-3f9a/dockerd"
	var checks atomic.Int64
	probe := checkedRunner{check: func(context.Context) error {
		checks.Add(1)
		return fmt.Errorf("dockerd not found (install Debian's docker.io): stat %s: no such file or directory", hidden)
	}}
	var logs lockedBuffer
	g := newGateway(t, gwOptions{noWorkers: true, log: slog.New(slog.NewTextHandler(&logs, nil)), builder: []jobs.Option{jobs.WithRunner("probe", probe)}})

	const n = 100
	start := time.Now()
	bodies := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := http.Get(g.url + "/readyz")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /readyz = %d %s, want 200: the default runner works", resp.StatusCode, b)
			}
			bodies[i] = string(b)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	// One check a second at most, and one more for a flood that
	// straddles a second.
	if got, limit := checks.Load(), 2+int64(elapsed/time.Second); got > limit {
		t.Errorf("%d concurrent GET /readyz in %v ran %d checks, want at most %d", n, elapsed, got, limit)
	}
	for _, b := range bodies {
		var got api.Readiness
		if err := json.Unmarshal([]byte(b), &got); err != nil || !got.Ready || got.Runners["probe"] != "unavailable" || got.Runners["kaniko"] != "ok" || !slices.Equal(got.Failing, []string{"runner:probe"}) {
			t.Errorf("GET /readyz = %s (%v), want ready, runners probe unavailable and kaniko ok, failing [runner:probe]", b, err)
		}
		if strings.Contains(b, "hidden-3f9a") || strings.Contains(b, "not found") {
			t.Errorf("GET /readyz = %s, want no reason in it", b)
		}
	}
	if got := strings.Count(logs.String(), hidden); got != 1 {
		t.Errorf("gateway log names %s %d times, want once:\n%s", hidden, got, logs.String())
	}
}

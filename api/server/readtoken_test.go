package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/auth"
)

// lockedBuffer collects audit lines written from the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) records(t *testing.T) []audit.Record {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []audit.Record
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func (g *gw) accept(t *testing.T, token, key string) api.Accepted {
	t.Helper()
	body, ct := multipartBody(t, curlBody(specJSON(g.dest("readtoken")), scratchContext(t)))
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/builds", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", ct)
	if key != "" {
		req.Header.Set(api.IdempotencyKeyHeader, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var acc api.Accepted
	if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&acc) != nil {
		t.Fatalf("submit = %d, want 202 with an Accepted body", resp.StatusCode)
	}
	return acc
}

// TestReadToken: a submit's read token reads and cancels that build and
// nothing else, is kept only hashed, and is audited as its owner acting
// through it.
func TestReadToken(t *testing.T) {
	var auditLog lockedBuffer
	al, err := audit.New(audit.WithWriter(&auditLog))
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, gwOptions{noWorkers: true, server: []server.Option{server.WithAudit(al)}})
	a := g.accept(t, aliceToken, "")
	other := g.accept(t, aliceToken, "")
	bobs := g.accept(t, bobToken, "")
	if !strings.HasPrefix(a.ReadToken, api.ReadTokenPrefix) || len(a.ReadToken) < len(api.ReadTokenPrefix)+22 {
		t.Fatalf("read_token = %q, want %q and at least 128 bits", a.ReadToken, api.ReadTokenPrefix+"...")
	}
	if a.ReadToken == other.ReadToken {
		t.Fatalf("two builds got the same read token %q", a.ReadToken)
	}

	if b := g.get(t, a.ReadToken, a.ID); b.ID != a.ID || b.Status != api.StatusQueued {
		t.Errorf("GET %s with its read token = %+v, want it queued", a.ID, b)
	}
	if r := do(t, http.MethodGet, g.url+"/v1/builds/"+a.ID+"/logs", a.ReadToken, "", nil); r.status != http.StatusOK || !strings.Contains(string(r.body), "accepted") {
		t.Errorf("GET logs with its read token = %d %q, want 200 and the log", r.status, r.body)
	}

	last := "A"
	if strings.HasSuffix(a.ReadToken, last) {
		last = "B"
	}
	flipped := a.ReadToken[:len(a.ReadToken)-1] + last
	tests := []struct {
		name, method, path, token string
		status                    int
		code, message             string
	}{
		{"another build's status", http.MethodGet, "/v1/builds/" + other.ID, a.ReadToken, http.StatusUnauthorized, api.CodeUnauthorized, "not valid for build " + other.ID},
		{"another build's log", http.MethodGet, "/v1/builds/" + other.ID + "/logs?follow=1", a.ReadToken, http.StatusUnauthorized, api.CodeUnauthorized, "not valid for build " + other.ID},
		{"another build's cancel", http.MethodPost, "/v1/builds/" + other.ID + "/cancel", a.ReadToken, http.StatusUnauthorized, api.CodeUnauthorized, "not valid for build " + other.ID},
		{"another identity's build", http.MethodGet, "/v1/builds/" + bobs.ID, a.ReadToken, http.StatusUnauthorized, api.CodeUnauthorized, "not valid"},
		{"an altered token", http.MethodGet, "/v1/builds/" + a.ID, flipped, http.StatusUnauthorized, api.CodeUnauthorized, "not valid"},
		{"list", http.MethodGet, "/v1/builds", a.ReadToken, http.StatusForbidden, api.CodeDenied, "only reads that build"},
		{"submit", http.MethodPost, "/v1/builds", a.ReadToken, http.StatusForbidden, api.CodeDenied, "only reads that build"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, g.url+tc.path, tc.token, "", nil)
			if r.status != tc.status {
				t.Fatalf("%s %s with a read token = %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.status)
			}
			if eb := r.errorBody(t); eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, tc.message) {
				t.Errorf("%s %s with a read token: error %+v, want code %s naming %q", tc.method, tc.path, eb.Error, tc.code, tc.message)
			}
		})
	}
	if b := g.get(t, aliceToken, other.ID); b.Status != api.StatusQueued {
		t.Errorf("build %s after a cancel with another build's read token: %s, want queued", other.ID, b.Status)
	}

	// Hashed at rest: the job store holds the sha256, never the token.
	raw, err := os.ReadFile(filepath.Join(g.stateDir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, acc := range []api.Accepted{a, other, bobs} {
		sum := sha256.Sum256([]byte(acc.ReadToken))
		if bytes.Contains(raw, []byte(acc.ReadToken)) || bytes.Contains(raw, []byte(strings.TrimPrefix(acc.ReadToken, api.ReadTokenPrefix))) {
			t.Errorf("jobs.db holds build %s's read token in the clear", acc.ID)
		}
		if !bytes.Contains(raw, []byte(hex.EncodeToString(sum[:]))) {
			t.Errorf("jobs.db lacks the sha256 of build %s's read token", acc.ID)
		}
	}

	// A repeated submission answers a new token, which replaces the old.
	first := g.accept(t, aliceToken, "key-1")
	again := g.accept(t, aliceToken, "key-1")
	if again.ID != first.ID || again.ReadToken == first.ReadToken {
		t.Fatalf("repeated submit = %s with token %q, want build %s with a new token", again.ID, again.ReadToken, first.ID)
	}
	if r := do(t, http.MethodGet, g.url+"/v1/builds/"+first.ID, first.ReadToken, "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET with the replaced read token = %d, want 401", r.status)
	}
	g.get(t, again.ReadToken, first.ID)

	// Cancel works, and is audited as alice acting through the token.
	r := do(t, http.MethodPost, g.url+"/v1/builds/"+a.ID+"/cancel", a.ReadToken, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("cancel with its read token = %d %s, want 202", r.status, r.body)
	}
	var found, refusals int
	for _, rec := range auditLog.records(t) {
		if rec.Via != "read_token" {
			continue
		}
		switch {
		case rec.Action == "build.cancel" && rec.JobID == a.ID:
			found++
			if rec.Identity == nil || rec.Identity.Name != "alice" || rec.Decision != audit.DecisionAllow {
				t.Errorf("audit of a cancel through a read token = %+v, want alice allowed", rec)
			}
		case rec.Event == audit.EventAuthn && rec.Decision == audit.DecisionDeny:
			refusals++
		}
		if strings.Contains(rec.Reason, a.ReadToken) {
			t.Errorf("audit record holds the read token: %+v", rec)
		}
	}
	if found != 1 || refusals < len(tests) {
		t.Errorf("audit: %d cancels through the read token (want 1), %d refusals (want %d)", found, refusals, len(tests))
	}
}

// onlyTen allows 10.0.0.0/8 alone.
type onlyTen struct{}

func (onlyTen) Allows(addr string) bool { return strings.HasPrefix(addr, "10.") }

// TestReadTokenOwnerNetworks: a read token is refused where its owner's
// own credentials would be.
func TestReadTokenOwnerNetworks(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true, server: []server.Option{server.WithIdentities(func(id auth.Identity) (auth.Networks, bool) {
		if id.Name == "alice" {
			return onlyTen{}, true
		}
		return nil, true
	})}})
	a, b := g.accept(t, aliceToken, ""), g.accept(t, bobToken, "")
	r := do(t, http.MethodGet, g.url+"/v1/builds/"+a.ID, a.ReadToken, "", nil)
	if eb := r.errorBody(t); r.status != http.StatusUnauthorized || !strings.Contains(eb.Error.Message, "may not be used from this address") {
		t.Errorf("GET with a read token of an identity held to 10/8, from loopback = %d %+v, want 401 naming the address", r.status, eb.Error)
	}
	g.get(t, b.ReadToken, b.ID)
}

// TestReadTokenEndsWithOwner: once its owner is no longer configured (a
// token removed, say, and the gateway restarted), a build's read token is
// refused too, while other owners' read tokens keep working.
func TestReadTokenEndsWithOwner(t *testing.T) {
	g := newGateway(t, gwOptions{noWorkers: true, server: []server.Option{server.WithIdentities(func(id auth.Identity) (auth.Networks, bool) {
		return nil, id.Name != "alice"
	})}})
	a, b := g.accept(t, aliceToken, ""), g.accept(t, bobToken, "")
	for _, path := range []string{"", "/logs"} {
		r := do(t, http.MethodGet, g.url+"/v1/builds/"+a.ID+path, a.ReadToken, "", nil)
		if eb := r.errorBody(t); r.status != http.StatusUnauthorized || !strings.Contains(eb.Error.Message, "identity alice is no longer configured") {
			t.Errorf("GET %s with the read token of a removed owner = %d %+v, want 401 naming the owner", path, r.status, eb.Error)
		}
	}
	r := do(t, http.MethodPost, g.url+"/v1/builds/"+a.ID+"/cancel", a.ReadToken, "", nil)
	if r.status != http.StatusUnauthorized {
		t.Errorf("POST cancel with the read token of a removed owner = %d, want 401", r.status)
	}
	g.get(t, b.ReadToken, b.ID)
}

package gateway_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/workspace"
)

// TestDindRunnerUnavailable: a gateway whose host has no dockerd starts
// anyway, /readyz lists dind as unavailable while the gateway's log names
// the reason, and a build that asks for the dind runner gets a 400 naming
// the problem, with nothing left behind.
func TestDindRunnerUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		dind    gateway.DindRunner
		wantLog string // the reason in the gateway's log; "" = dind not listed in /readyz
		wantErr string
	}{
		{"dockerd missing", gateway.DindRunner{Dockerd: "/nonexistent/dockerd"}, "dockerd not found", "dockerd not found"},
		{"disabled", gateway.DindRunner{Disabled: true}, "", `"dind" is not available here`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testenv.RequireSandbox(t)
			tok := "bgw_test_" + tc.name
			cfg := testConfig(t, tok, "rules:\n  - name: all\n    match: {kind: token}\n    allow:\n      destinations: [\"127.0.0.1:1/**\"]\n      runners: [kaniko, dind]\n")
			cfg.Runners.Dind = tc.dind
			var logs lockedBuffer
			g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("gateway.New with %+v = %v, want a gateway", tc.dind, err)
			}
			serve(t, g)

			resp, err := http.Get(g.URL() + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			var ready struct {
				Ready   bool              `json:"ready"`
				Runners map[string]string `json:"runners"`
			}
			err = json.NewDecoder(resp.Body).Decode(&ready)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !ready.Ready {
				t.Fatalf("GET /readyz = %d %+v (%v), want 200 and ready: the default runner works", resp.StatusCode, ready, err)
			}
			got, listed := ready.Runners["dind"]
			switch {
			case tc.wantLog == "" && listed:
				t.Errorf("GET /readyz runners[dind] = %q, want it not listed", got)
			case tc.wantLog != "" && got != "unavailable":
				t.Errorf("GET /readyz runners[dind] = %q, want unavailable", got)
			case tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog):
				t.Errorf("gateway log = %q, want the reason %q", logs.String(), tc.wantLog)
			}

			ct, body := multipartBody(t, api.BuildSpec{Destinations: []string{"127.0.0.1:1/team/app:1"}, Runner: "dind"}, map[string]string{"Dockerfile": "FROM scratch\n"})
			req, _ := http.NewRequest(http.MethodPost, g.URL()+"/v1/builds", bytes.NewReader(body))
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e api.ErrorBody
			err = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusBadRequest || e.Error.Code != api.CodeInvalidSpec || !strings.Contains(e.Error.Message, tc.wantErr) {
				t.Errorf("POST /v1/builds runner dind = %d %+v (%v), want 400 %s naming %q", resp.StatusCode, e.Error, err, api.CodeInvalidSpec, tc.wantErr)
			}
			if left, _ := filepath.Glob(filepath.Join(workspace.NewLayout(cfg.StateDir).Jobs, "*")); len(left) > 0 {
				t.Errorf("workspaces after a refused build = %v, want none", left)
			}
		})
	}
}

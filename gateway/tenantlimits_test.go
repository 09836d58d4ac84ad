package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// TestTenantLimits: under a rule whose tenant is the project, set or by
// default from its cache.scope, the rule's max_concurrent counts a
// project's builds from all its branches (a GitLab identity each), while
// another project's build runs beside them.
func TestTenantLimits(t *testing.T) {
	for _, tc := range []struct {
		name, keys string
	}{
		{"tenant project", "cache: {scope: identity}\n    tenant: project"},
		{"tenant from cache.scope project", "cache: {scope: project}"},
	} {
		t.Run(tc.name, func(t *testing.T) { testTenantLimits(t, tc.keys) })
	}
}

func testTenantLimits(t *testing.T, keys string) {
	e := newAuthzEnv(t)
	writeFile(t, e.policyFile, fmt.Sprintf(`rules:
  - name: gitlab-branches
    match: {kind: oidc, issuer: %[1]s}
    allow:
      destinations: ["%[2]s/{project_path}"]
      from: [%[2]s]
      limits: {max_concurrent: 1}
    %[3]s
`, e.gitlab.URL, e.reg, keys))
	e.g.Reload()
	submit := func(project, ref, run string) (bearer, id string) {
		t.Helper()
		bearer = e.jwt(t, e.gitlab, e.gitlab.GitLabClaims(aud, testoidc.GitLab{ProjectPath: project, Ref: ref}, time.Now()))
		r := e.submit(t, request{bearer: bearer, spec: api.BuildSpec{Destinations: []string{e.reg + "/" + project + ":" + ref}},
			dockerfile: "FROM " + e.busybox + "\nRUN " + run + "\n"})
		if r.status != http.StatusAccepted {
			t.Fatalf("POST /v1/builds for %s %s = %d %s", project, ref, r.status, r.raw)
		}
		return bearer, r.id
	}
	status := func(bearer, id string) api.Status {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/builds/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var b api.Build
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &b) != nil {
			t.Fatalf("GET /v1/builds/%s = %d %s", id, resp.StatusCode, raw)
		}
		return b.Status
	}
	b1, first := submit("group/app", "b1", "sleep 60")
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); status(b1, first) != api.StatusRunning; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("group/app b1's build = %s after a minute, want running", status(b1, first))
		}
	}
	b2, second := submit("group/app", "b2", "true")
	other, third := submit("group/other", "b1", "true")
	if b := e.wait(t, other, third); b.Status != api.StatusSucceeded {
		t.Fatalf("group/other's build = %s (%s), want succeeded beside group/app's", b.Status, b.Error)
	}
	if s := status(b2, second); s != api.StatusQueued {
		t.Errorf("group/app b2's build = %s while b1's runs, want queued (max_concurrent 1 per project)", s)
	}
	e.cancel(t, request{bearer: b1}, first)
	if b := e.wait(t, b2, second); b.Status != api.StatusSucceeded {
		t.Errorf("group/app b2's build = %s (%s), want succeeded once b1's ended", b.Status, b.Error)
	}
}

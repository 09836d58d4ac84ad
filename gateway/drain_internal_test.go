package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth/token"
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
	d := newDrain(server.New(te.M, authn, nil), func(string) bool { return true })
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

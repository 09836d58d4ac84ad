package cmd

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/api"
)

// TestUnauthorizedHint: the login hint follows a missing or wrong static
// token, not a refused ID token, whose message says what to fix instead.
func TestUnauthorizedHint(t *testing.T) {
	const loginHint = "run buildctl-lite login"
	for _, tt := range []struct {
		message string
		hint    bool
	}{
		{"invalid token", true},
		{"missing credentials: send a bearer token or a client certificate", true},
		{`wrong token audience "x": tokens of issuer https://gitlab.example.com must have aud "https://buildgw.example.com"`, false},
		{"token expired at 2026-01-02T03:04:05Z, 1m0s ago", false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeUnauthorized, Message: tt.message}})
		}))
		_, stderr, code := runMain(context.Background(), t, "list", "--server", srv.URL, "--token", "t")
		srv.Close()
		if code == 0 || !strings.Contains(stderr, "unauthorized: "+tt.message) || strings.Contains(stderr, loginHint) != tt.hint {
			t.Errorf("buildctl-lite list answered 401 %q = exit %d, %q; want the message, login hint %v", tt.message, code, stderr, tt.hint)
		}
	}
}

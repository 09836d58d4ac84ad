package push_test

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/push"
)

// flakyRegistry is a real in-memory registry whose first failures
// manifest uploads are answered with status instead, and body if set.
type flakyRegistry struct {
	reg       http.Handler
	failures  int32
	status    int
	body      string
	manifests atomic.Int32
}

func (f *flakyRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
		if f.manifests.Add(1) <= f.failures {
			if f.body != "" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(f.status)
				io.WriteString(w, f.body)
				return
			}
			http.Error(w, "registry hiccup", f.status)
			return
		}
	}
	f.reg.ServeHTTP(w, r)
}

func TestPushRetries(t *testing.T) {
	tests := []struct {
		name     string
		failures int32
		status   int
		body     string
		wantErr  string // empty: the push succeeds
		wantPuts int32
		attempts int
	}{
		{name: "500 twice then success", failures: 2, status: http.StatusInternalServerError, wantPuts: 3, attempts: 4},
		{name: "503 for good", failures: 100, status: http.StatusServiceUnavailable, wantErr: "answered 503 Service Unavailable after 3 attempts", wantPuts: 3, attempts: 3},
		{name: "400 is not retried", failures: 100, status: http.StatusBadRequest, wantErr: "answered 400 Bad Request after 1 attempt", wantPuts: 1, attempts: 4},
		// What Distribution answers when another push links the same
		// layer into the repository while it checks the manifest.
		{name: "blob the registry lost track of is retried", failures: 1, status: http.StatusBadRequest, wantPuts: 2, attempts: 4,
			body: `{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:c4b4"}]}`},
		{name: "invalid manifest is not retried", failures: 100, status: http.StatusBadRequest, wantErr: "answered 400 Bad Request after 1 attempt", wantPuts: 1, attempts: 4,
			body: `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &flakyRegistry{reg: registry.New(registry.Logger(log.New(io.Discard, "", 0))), failures: tt.failures, status: tt.status, body: tt.body}
			srv := httptest.NewServer(f)
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			p, err := push.New(nil, push.WithRetry(tt.attempts, time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			img, err := random.Image(1024, 2)
			if err != nil {
				t.Fatal(err)
			}
			dst, _ := name.NewTag(host + "/team/app:v1")
			err = p.Push(context.Background(), img, dst, nil)
			if got := f.manifests.Load(); got != tt.wantPuts {
				t.Errorf("manifest uploads = %d, want %d", got, tt.wantPuts)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Push() = %v, want nil", err)
				}
				want, _ := img.Digest()
				got, err := crane.Digest(dst.String())
				if err != nil || got != want.String() {
					t.Errorf("pushed digest = %s, %v, want %s", got, err, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "registry "+host) {
				t.Errorf("Push() = %v, want an error naming registry %s and %q", err, host, tt.wantErr)
			}
		})
	}
}

func TestPushRegistryDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close() // nothing listens there any more
	p, err := push.New(nil, push.WithRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(256, 1)
	dst, _ := name.NewTag(host + "/team/app:v1")
	err = p.Push(context.Background(), img, dst, nil)
	if err == nil || !strings.Contains(err.Error(), "registry "+host+" unreachable after 3 attempts") {
		t.Errorf("Push(to a closed port) = %v, want registry %s unreachable after 3 attempts", err, host)
	}

	// Cancelling stops the waits at once.
	p, _ = push.New(nil, push.WithRetry(10, time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Push(ctx, img, dst, nil); err == nil || time.Since(start) > testenv.Scale(10*time.Second) {
		t.Errorf("Push(cancelled during backoff) = %v after %s, want an error at once", err, time.Since(start))
	}
}

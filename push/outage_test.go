package push_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

// outageProxy is a real in-memory registry behind a proxy that, from its
// after-th request on, answers 503 for outage, or (hang) holds every
// request without answering until the client gives up.
type outageProxy struct {
	reg      http.Handler
	after    int32
	outage   time.Duration
	hang     bool
	stallPut bool // take 64 KiB of each upload body, then stop reading

	quit chan struct{} // closed when the test ends: hung handlers return

	requests atomic.Int32
	mu       sync.Mutex
	began    time.Time
	failed   atomic.Int32
}

func (o *outageProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if o.requests.Add(1) < o.after {
		o.reg.ServeHTTP(w, r)
		return
	}
	o.mu.Lock()
	if o.began.IsZero() {
		o.began = time.Now()
	}
	in := time.Since(o.began) < o.outage
	o.mu.Unlock()
	switch {
	case !in:
		o.reg.ServeHTTP(w, r)
	case o.stallPut && (r.Method == http.MethodPatch || r.Method == http.MethodPut):
		o.failed.Add(1)
		io.CopyN(io.Discard, r.Body, 64<<10)
		// A server does not notice a client gone while it leaves the body
		// unread: quit ends this handler.
		select {
		case <-r.Context().Done():
		case <-o.quit:
		}
	case o.hang:
		o.failed.Add(1)
		select {
		case <-r.Context().Done():
		case <-o.quit:
		}
	case o.stallPut:
		o.reg.ServeHTTP(w, r)
	default:
		o.failed.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}
}

// TestPushOutlastsOutage: a registry that goes down after the push began
// and stays down for 30 s, far longer than the 7s pushes used to retry
// for, comes back, and the push succeeds, each retry noted in the log
// with its reason.
func TestPushOutlastsOutage(t *testing.T) {
	o := &outageProxy{reg: registry.New(registry.Logger(log.New(io.Discard, "", 0))), after: 3, outage: 30 * time.Second}
	srv := httptest.NewServer(o)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	// Short waits keep the test short; the outage outlasts the old give-up
	// of 4 attempts from 1s (7s of waits) all the same.
	p, err := push.New(nil, push.WithRetry(0, 200*time.Millisecond), push.WithMaxBackoff(2*time.Second), push.WithRetryFor(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := name.NewTag(host + "/team/app:v1")
	var mu sync.Mutex
	var lines []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}
	start := time.Now()
	if err := p.Push(context.Background(), img, dst, logf); err != nil {
		t.Fatalf("Push() through a %s outage = %v, want success", o.outage, err)
	}
	if o.failed.Load() == 0 || time.Since(start) < o.outage {
		t.Fatalf("Push() took %s with %d failed requests: the outage did not happen", time.Since(start), o.failed.Load())
	}
	want, _ := img.Digest()
	if got, err := crane.Digest(dst.String()); err != nil || got != want.String() {
		t.Errorf("pushed digest = %s, %v, want %s", got, err, want)
	}
	if len(lines) < 3 {
		t.Fatalf("retries logged = %q, want one line per retry", lines)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "push to "+host+" failed (503 Service Unavailable), retrying in ") {
			t.Errorf("retry log line %q, want \"push to %s failed (503 Service Unavailable), retrying in ...\"", l, host)
		}
	}
}

// TestPushHungRegistry: a registry that accepts connections but never
// answers, or stops reading an upload, fails the push within the request
// timeout, in one attempt though the retry window is far longer, not at
// the build's timeout, and the error names the registry.
func TestPushHungRegistry(t *testing.T) {
	tests := []struct {
		name      string
		o         *outageProxy
		imageSize int64
	}{
		{"never answers", &outageProxy{after: 1, outage: time.Hour, hang: true}, 1024},
		// Larger than what the loopback socket buffers take unread.
		{"stops reading an upload", &outageProxy{after: 1, outage: time.Hour, stallPut: true}, 32 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.reg = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
			tc.o.quit = make(chan struct{})
			srv := httptest.NewServer(tc.o)
			defer srv.Close()
			defer close(tc.o.quit)
			host := strings.TrimPrefix(srv.URL, "http://")
			const timeout = time.Second
			p, err := push.New(nil, push.WithRequestTimeout(timeout), push.WithRetry(0, 100*time.Millisecond), push.WithRetryFor(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			img, err := random.Image(tc.imageSize, 1)
			if err != nil {
				t.Fatal(err)
			}
			dst, _ := name.NewTag(host + "/team/app:v1")
			// The build's own timeout, far beyond the request timeout.
			ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(2*time.Minute))
			defer cancel()
			start := time.Now()
			err = p.Push(ctx, img, dst, nil)
			took := time.Since(start)
			if err == nil {
				t.Fatal("Push() to a hung registry = nil, want an error")
			}
			if took > testenv.Scale(20*time.Second) {
				t.Errorf("Push() to a hung registry failed after %s, want about the request timeout %s", took, timeout)
			}
			want := "registry " + host + " stopped answering after 1 attempt"
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "request_timeout") {
				t.Errorf("Push() to a hung registry = %v, want an error containing %q and naming push.request_timeout", err, want)
			}
			t.Logf("Push() = %v after %s", err, took)
		})
	}
}

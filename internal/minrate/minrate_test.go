package minrate

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
)

// slowBody sends piece, then every interval another, n times in all,
// then stays silent until the request ends.
type slowBody struct {
	piece    string
	interval time.Duration
	n        int
	done     <-chan struct{}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		<-b.done
		return 0, io.EOF
	}
	if b.interval > 0 {
		time.Sleep(b.interval) // the trickle itself, not a wait
	}
	b.n--
	return copy(p, b.piece), nil
}

// TestReader: a body that stops for a window, or arrives below the rate,
// fails with *Error; one above the rate is read whole.
func TestReader(t *testing.T) {
	// The window grows with the time scale, and the rate shrinks with it,
	// so that a window always wants 1 KiB: a busy machine delays pieces,
	// not the test's margins.
	window := testenv.Scale(time.Second)
	rate := Rate{MinBytesPerSecond: int64(1024 / window.Seconds()), Window: window}
	tests := []struct {
		name    string
		body    slowBody
		stalled bool
		slow    bool
	}{
		// 5 KiB a window.
		{"above the rate", slowBody{piece: strings.Repeat("x", 512), interval: window / 10, n: 20}, false, false},
		{"stalled", slowBody{piece: "x", n: 1}, true, false},
		// 500 bytes a window.
		{"below the rate", slowBody{piece: strings.Repeat("x", 100), interval: window / 5, n: 20}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errc := make(chan error, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.Copy(io.Discard, NewReader(w, r.Body, rate))
				errc <- err
			}))
			defer srv.Close()
			done := make(chan struct{})
			defer close(done)
			body := tc.body
			body.done = done
			req, err := http.NewRequest(http.MethodPut, srv.URL, &body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = 1 << 20
			if !tc.stalled && !tc.slow {
				req.ContentLength = int64(len(body.piece) * body.n)
			}
			go func() {
				if resp, err := srv.Client().Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			select {
			case err = <-errc:
			case <-time.After(testenv.Scale(10 * time.Second)):
				t.Fatalf("the body was still being read after %s", testenv.Scale(10*time.Second))
			}
			var me *Error
			if !errors.As(err, &me) {
				if tc.stalled || tc.slow {
					t.Fatalf("reading the body = %v, want *Error", err)
				}
				if err != nil {
					t.Errorf("reading the body = %v, want nil", err)
				}
				return
			}
			if me.Stalled != tc.stalled || (tc.slow && (me.Bytes == 0 || me.Bytes >= int64(me.Elapsed.Seconds()*float64(rate.MinBytesPerSecond)))) {
				t.Errorf("reading the body = %+v, want stalled %v, slow %v", me, tc.stalled, tc.slow)
			}
		})
	}
}

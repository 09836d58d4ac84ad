package kubernetes

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/minrate"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/runners/kubernetes/podinit"
)

// shortLimits are dataLimits of a second, so that the tests see them act.
func shortLimits() dataLimits {
	return dataLimits{conns: 64, header: time.Second, idle: time.Second, body: time.Second,
		output: minrate.Rate{MinBytesPerSecond: 1024, Window: time.Second}}
}

// startShortData starts a data server under shortLimits with one build
// registered, and returns it, a TLS configuration trusting it, the
// build's URL and token.
func startShortData(t *testing.T) (d *dataServer, cfg *tls.Config, url, token string) {
	t.Helper()
	return startData(t, shortLimits())
}

// startData is startShortData under lim.
func startData(t *testing.T, lim dataLimits) (d *dataServer, cfg *tls.Config, url, token string) {
	t.Helper()
	d, err := newDataServer("127.0.0.1:0", "", lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close() })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(d.caPEM) {
		t.Fatal("the data server has no certificate")
	}
	ctxDir := t.TempDir()
	if err := os.WriteFile(ctxDir+"/Dockerfile", []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := &transfer{ctxDir: ctxDir, out: t.TempDir(), deadline: time.Now().Add(time.Hour), max: 1 << 20}
	url, token, err = d.register("b1", tr)
	if err != nil {
		t.Fatal(err)
	}
	return d, &tls.Config{RootCAs: pool}, url, token
}

// TestDataServerIdleConnectionClosed: a Pod's connection left silent,
// before its handshake or kept alive after a request, is closed after
// a bound, so that build Pods cannot hold the gateway's file
// descriptors by opening connections and sending nothing.
func TestDataServerIdleConnectionClosed(t *testing.T) {
	d, cfg, _, _ := startShortData(t)
	addr := d.ln.Addr().String()
	limit := time.Second + testenv.Scale(5*time.Second)
	t.Run("before the handshake", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		testenv.ClosedWithin(t, conn, conn, limit)
	})
	t.Run("kept alive after a request", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(limit))
		resp, br, err := testenv.RawRequest(t, conn, fmt.Sprintf("GET /v1/pods/nope%s HTTP/1.1\r\nHost: %s\r\n\r\n", podinit.PathContext, addr))
		if err != nil {
			t.Fatalf("GET of an unknown build: %v", err)
		}
		if resp.StatusCode != http.StatusUnauthorized || resp.Close {
			t.Fatalf("GET of an unknown build = %d (close %t), want 401 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		if took := testenv.ClosedWithin(t, conn, br, limit); took < 500*time.Millisecond {
			t.Errorf("idle connection closed after %s, want about the idle bound (1s)", took.Round(time.Millisecond))
		}
	})
}

// TestDataServerUnsentBody: a request that declares a body and never
// sends it is answered and its connection closed within a bound: the
// output, claimed with its token, within a window of its minimum rate;
// any other request within the body bound (net/http reads up to 256 KiB
// of a body left unread before it answers, with no bound of its own).
func TestDataServerUnsentBody(t *testing.T) {
	d, cfg, url, token := startShortData(t)
	addr := d.ln.Addr().String()
	tests := []struct {
		name, method, url, token string
		length                   int
		want                     int
	}{
		{"output with its token", http.MethodPut, url + podinit.PathOutput, token, 1 << 20, http.StatusRequestTimeout},
		{"output with a wrong token", http.MethodPut, url + podinit.PathOutput, "wrong", 1000, http.StatusUnauthorized},
		{"output of an unknown build", http.MethodPut, d.url + "/v1/pods/nope" + podinit.PathOutput, token, 1000, http.StatusUnauthorized},
		{"no such endpoint", http.MethodPost, d.url + "/v1/nothing", "", 1000, http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			limit := time.Second + testenv.Scale(5*time.Second)
			conn.SetDeadline(time.Now().Add(limit))
			auth := ""
			if tc.token != "" {
				auth = "Authorization: Bearer " + tc.token + "\r\n"
			}
			path := strings.TrimPrefix(tc.url, d.url)
			start := time.Now()
			resp, br, err := testenv.RawRequest(t, conn, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n", tc.method, path, addr, auth, tc.length))
			if err != nil {
				t.Fatalf("%s %s with an unsent body of %d bytes: %v after %s, want %d within a second",
					tc.method, path, tc.length, err, time.Since(start).Round(time.Millisecond), tc.want)
			}
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s with an unsent body = %d, want %d", tc.method, path, resp.StatusCode, tc.want)
			}
			testenv.ClosedWithin(t, conn, br, limit-time.Since(start))
		})
	}
}

// TestDataServerSlowOutputWithinRate: an output that takes longer than
// the body bound but keeps above the minimum rate is received: the body
// bound is for the other requests.
func TestDataServerSlowOutputWithinRate(t *testing.T) {
	// The output's window grows with the time scale, and the pieces'
	// interval with it, so that a busy machine delaying a piece neither
	// stalls a window nor takes the rate's margin (8 KiB a window, above
	// 1 KiB a second up to a scale of 4). The body bound stays 1s.
	lim := shortLimits()
	lim.output.Window = testenv.Scale(time.Second)
	_, cfg, url, token := startData(t, lim)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	blob := bytes.Repeat([]byte("x"), 20<<10)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "blob", Size: int64(len(blob)), Mode: 0o644})
	tw.Write(blob)
	tw.Close()
	// 2 KiB every quarter window (8 KiB/s unscaled): about 2.75s in all.
	body := &testenv.Trickle{B: buf.Bytes(), Size: 2 << 10, Interval: lim.output.Window / 4}
	req, err := http.NewRequest(http.MethodPut, url+podinit.PathOutput, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(buf.Len())
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: testenv.Scale(30 * time.Second)}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("slow output of %d bytes: %v after %s, want 204", buf.Len(), err, time.Since(start).Round(time.Millisecond))
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("slow output of %d bytes in %s = %d %s, want 204", buf.Len(), took.Round(time.Millisecond), resp.StatusCode, raw)
	}
	if took < 2*time.Second {
		t.Errorf("slow output took %s, want longer than the body bound (1s) for the test to mean anything", took.Round(time.Millisecond))
	}
}

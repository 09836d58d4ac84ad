package kubernetes

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/runners/kubernetes/podinit"
)

// TestDataServer: each URL of a build answers once, to its token only,
// and only before the deadline; what comes back is unpacked beneath the
// output directory, bounded.
func TestDataServer(t *testing.T) {
	d, err := newDataServer("127.0.0.1:0", "", defaultDataLimits())
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(d.caPEM) {
		t.Fatal("the data server has no certificate")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// Only over TLS, with the server's own certificate.
	if _, err := http.Get(d.url + "/v1/pods/b1" + podinit.PathContext); err == nil {
		t.Errorf("GET without trusting the server's certificate succeeded, want a TLS error")
	}
	ctxDir, out := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := &transfer{ctxDir: ctxDir, out: out, deadline: time.Now().Add(time.Minute), max: 1 << 10}
	url, token, err := d.register("b1", tr)
	if err != nil {
		t.Fatal(err)
	}
	other := &transfer{ctxDir: ctxDir, out: t.TempDir(), deadline: time.Now().Add(-time.Second), max: 1 << 10}
	otherURL, otherToken, err := d.register("b2", other)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, u, tok string, body io.Reader) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, tc := range []struct {
		name, method, url, token string
		want                     int
	}{
		{"no token", "GET", url + podinit.PathContext, "", 401},
		{"another build's token", "GET", url + podinit.PathContext, otherToken, 401},
		{"unknown build", "GET", d.url + "/v1/pods/nope" + podinit.PathContext, token, 401},
		{"expired", "GET", otherURL + podinit.PathContext, otherToken, 410},
		{"context", "GET", url + podinit.PathContext, token, 200},
		{"context again", "GET", url + podinit.PathContext, token, 410},
		{"base", "GET", url + podinit.PathBase, token, 200},
		{"base again", "GET", url + podinit.PathBase, token, 410},
	} {
		if got, body := do(tc.method, tc.url, tc.token, nil); got != tc.want {
			t.Errorf("%s: %s %s = %d (%s), want %d", tc.name, tc.method, tc.url, got, body, tc.want)
		}
	}

	// A hostile output: a link out of the output directory.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "index.json", Linkname: "../../etc/passwd"})
	tw.Close()
	if got, body := do("PUT", url+podinit.PathOutput, token, &buf); got != 400 {
		t.Errorf("PUT of a link out of the output = %d (%s), want 400", got, body)
	}
	if got, _ := do("PUT", url+podinit.PathOutput, token, strings.NewReader("")); got != 410 {
		t.Errorf("second PUT of the output = %d, want 410", got)
	}
	if err := tr.waitOutput(t.Context()); err == nil {
		t.Errorf("waitOutput after a hostile output = nil, want its error")
	}
	if _, err := os.Lstat(filepath.Join(out, "index.json")); err == nil {
		// archive refuses the entry before it makes anything.
		if target, _ := os.Readlink(filepath.Join(out, "index.json")); strings.Contains(target, "..") {
			t.Errorf("the output directory holds a link to %s", target)
		}
	}

	// Too large: more than max bytes of content.
	tr3 := &transfer{ctxDir: ctxDir, out: t.TempDir(), deadline: time.Now().Add(time.Minute), max: 1 << 10}
	url3, token3, err := d.register("b3", tr3)
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	tw = tar.NewWriter(&buf)
	big := bytes.Repeat([]byte("x"), 4<<10)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "blob", Size: int64(len(big)), Mode: 0o644})
	tw.Write(big)
	tw.Close()
	if got, body := do("PUT", url3+podinit.PathOutput, token3, &buf); got != 400 {
		t.Errorf("PUT of an output past its bound = %d (%s), want 400", got, body)
	}
}

// TestDataServerURL: the URL Pods use is https, and names an address
// they can reach, which each build's NetworkPolicy allows as an ipBlock;
// a host name or an unspecified address is refused at start, not at
// every build.
func TestDataServerURL(t *testing.T) {
	for _, tc := range []struct {
		listen, url string
		ok          bool
	}{
		{"127.0.0.1:0", "", true},
		{"127.0.0.1:0", "https://10.1.2.3:8444", true},
		{"127.0.0.1:0", "https://[fd00::5]:8444", true},
		{"127.0.0.1:0", "http://127.0.0.1:8444", false},
		{"127.0.0.1:0", "https://buildgw-data.buildgw.svc:8444", false},
		{"0.0.0.0:0", "", false},
		{"[::]:0", "", false},
	} {
		d, err := newDataServer(tc.listen, tc.url, defaultDataLimits())
		if err == nil {
			d.close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("newDataServer(%q, %q) = %v, want ok %v", tc.listen, tc.url, err, tc.ok)
		}
	}
}

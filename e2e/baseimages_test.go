package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testgateway"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestEndToEndBaseImages builds ten images on the same base, at once,
// through the gateway. The base registry sits behind a proxy that counts
// blob downloads: the gateway downloads each blob once, the sandboxes
// (which have no network) none, and every pushed image names its base in
// its manifest's annotations.
func TestEndToEndBaseImages(t *testing.T) {
	var target atomic.Pointer[url.URL]
	var blobGETs atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			blobGETs.Add(1)
		}
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	proxyHost := proxy.Listener.Addr().String()

	g := startGatewayWith(t, gatewayOptions{policy: func(g *gateway) testgateway.Policy {
		u, err := url.Parse(g.base.URL())
		if err != nil {
			t.Fatal(err)
		}
		target.Store(u)
		return testgateway.Policy{Rules: []testgateway.Rule{{
			Name:  "test-tokens",
			Match: map[string]string{"kind": "token"},
			Allow: testgateway.Allow{Destinations: []string{g.dest.Host + "/team/**"}, From: []string{proxyHost}},
		}}}
	}})
	tok := g.tokens["ci"]

	// The base as the proxy serves it, and what it is made of.
	base := proxyHost + strings.TrimPrefix(g.busybox, g.base.Host)
	direct, err := name.ParseReference(g.busybox)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(direct)
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, _ := img.Digest()
	layers, _ := img.Layers()
	wantBlobs := int64(len(layers) + 1) // and the config

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM ${BASE}\nARG N\nRUN echo \"build $N\" > /n.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const builds = 10
	var wg sync.WaitGroup
	digests := make([]string, builds)
	for i := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := fmt.Sprintf("%s/team/onbase:%d", g.dest.Host, i)
			stdout, stderr, code := g.cli(t, tok, "submit", "-t", ref, "--build-arg", "BASE="+base, "--build-arg", fmt.Sprintf("N=%d", i), dir)
			if code != 0 {
				t.Errorf("submit %s = exit %d\n%s", ref, code, stderr)
				return
			}
			digests[i] = lastLine(stdout)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if got := blobGETs.Load(); got != wantBlobs {
		t.Errorf("%d builds of one base downloaded %d blobs, want %d (each blob once)", builds, got, wantBlobs)
	}

	baseName, _ := name.ParseReference(base)
	for i := range builds {
		ref := fmt.Sprintf("%s/team/onbase:%d@%s", g.dest.Host, i, digests[i])
		pushed := g.pull(t, ref)
		if got := files(t, pushed)["n.txt"].content; got != fmt.Sprintf("build %d\n", i) {
			t.Errorf("%s: n.txt = %q, want %q", ref, got, fmt.Sprintf("build %d\n", i))
		}
		m, err := pushed.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.base.name":   baseName.Name(),
			"org.opencontainers.image.base.digest": baseDigest.String(),
		} {
			if got := m.Annotations[k]; got != want {
				t.Errorf("%s: annotation %s = %q, want %q", ref, k, got, want)
			}
		}
	}

	// The API shows what each build started from.
	code, body := g.do(t, http.MethodGet, "/v1/builds", tok, "", nil)
	var list api.BuildList
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/builds = %d %v\n%s", code, err, body)
	}
	onBase := 0
	for _, b := range list.Builds {
		if len(b.BaseImages) == 1 && b.BaseImages[0] == (api.BaseImage{Name: base, Digest: baseDigest.String()}) {
			onBase++
		}
	}
	if onBase != builds {
		t.Errorf("GET /v1/builds shows %d builds with base_images [%s %s], want %d\n%s", onBase, base, baseDigest, builds, body)
	}

	// The audit record of each build names the digest of its base. (The
	// name came from a build arg here, and build-arg values are redacted
	// wherever they appear in the audit log.)
	audit, err := os.ReadFile(g.auditFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(audit), "@"+baseDigest.String()+`"]`); n != builds {
		t.Errorf("audit log names the base digest of %d builds, want %d:\n%s", n, builds, audit)
	}
}

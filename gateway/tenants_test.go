package gateway_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth/token"
	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/workspace"
)

// privateRegistry is an in-memory registry that refuses anonymous
// requests, like a company registry holding tenants' private images.
func privateRegistry(t *testing.T, user, password string) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// fileLayer is a layer holding one file.
func fileLayer(t *testing.T, path, content string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: path, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)})
	io.WriteString(tw, content)
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestTenantImages checks that one tenant cannot read another's private
// images through the gateway, which pulls with its own credentials:
// neither by FROM, nor COPY --from, nor an ONBUILD trigger of an allowed
// base image, on either runner; while the owner still builds from them.
func TestTenantImages(t *testing.T) {
	testenv.RequireSandbox(t)
	const user, password = "buildgw", "registry-password"
	reg := privateRegistry(t, user, password)
	pull := remote.WithAuth(&authn.Basic{Username: user, Password: password})
	put := func(ref string, img v1.Image) string {
		t.Helper()
		r := must[name.Reference](t)(name.ParseReference(ref, name.Insecure))
		if err := remote.Write(r, img, pull); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
		return r.Context().Name()
	}
	busybox := must[v1.Image](t)(baseimage.Busybox(testenv.BusyboxBinary(t)))
	put(reg+"/base/busybox:1", busybox)
	privateImg := must[v1.Image](t)(mutate.AppendLayers(busybox, fileLayer(t, "secret", "tenant b's secret\n")))
	private := put(reg+"/teamb/app/private:1", privateImg)
	// An allowed base image whose ONBUILD trigger copies from B's image,
	// with a layer of its own that must never be fetched.
	own := fileLayer(t, "onbuild-layer", "only in the onbuild image\n")
	ob := must[v1.Image](t)(mutate.AppendLayers(busybox, own))
	cf := must[*v1.ConfigFile](t)(ob.ConfigFile()).DeepCopy()
	cf.Config.OnBuild = []string{"COPY --from=" + private + ":1 /secret /secret"}
	onbuild := put(reg+"/base/onbuild:1", must[v1.Image](t)(mutate.ConfigFile(ob, cf)))

	toks := map[string]string{"a": "bgw_tenant_a_" + randHex(t), "b": "bgw_tenant_b_" + randHex(t), "legacy": "bgw_legacy_" + randHex(t)}
	cfg := testConfig(t, toks["a"], fmt.Sprintf(`rules:
  - name: tenants
    match: {kind: token, project_path: "*/*"}
    allow:
      destinations: ["%[1]s/{project_path}"]
      from: ["%[1]s/{project_path}/**", "%[1]s/base/*"]
      runners: [kaniko, dind]
  - name: legacy
    match: {kind: token, name: legacy}
    allow:
      destinations: ["%[1]s/legacy/*"]
      from: [%[1]s]
`, reg))
	cfg.Tokens = nil
	for _, n := range []string{"a", "b", "legacy"} {
		cfg.Tokens = append(cfg.Tokens, gateway.Token{Name: n, SHA256: token.HashToken(toks[n]), Attributes: map[string]string{"project_path": "team" + n + "/app"}})
	}
	pwFile := filepath.Join(t.TempDir(), "password")
	writeFile(t, pwFile, password)
	cfg.Registries = map[string]gateway.Registry{reg: {Insecure: true, Username: user, PasswordFile: pwFile}}
	var logs lockedBuffer
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	serve(t, g)
	e := &authzEnv{url: g.URL(), client: &http.Client{Timeout: testenv.Scale(30 * time.Second)}}
	waitHealthy(t, e.client, e.url)

	// The one bare registry is pointed out once, at start-up.
	if n := strings.Count(logs.String(), `allow.from \"`+reg+`\" lets its builds read any repository`); n != 1 {
		t.Errorf("start-up log warns %d times of rule legacy's bare registry, want once:\n%s", n, logs.String())
	}

	destA, destB := []string{reg + "/teama/app:1"}, []string{reg + "/teamb/app:1"}
	refused := []struct {
		name, dockerfile, runner, msg string
	}{
		{"FROM", "FROM " + private + ":1\n", "", `policy rule "tenants" does not allow image ` + private + `:1 (FROM on line 1): repository ` + private + ` is not in allow.from`},
		{"COPY --from", "FROM " + reg + "/base/busybox:1\nCOPY --from=" + private + ":1 /secret /secret\n", "",
			`policy rule "tenants" does not allow image ` + private + `:1 (COPY --from on line 2)`},
		{"ONBUILD trigger, kaniko", "FROM " + onbuild + ":1\n", "kaniko",
			`policy rule "tenants" does not allow image ` + private + `:1 (ONBUILD trigger 1 of base image ` + onbuild + `:1)`},
		{"ONBUILD trigger, dind", "FROM " + onbuild + ":1\n", "dind",
			`policy rule "tenants" does not allow image ` + private + `:1 (ONBUILD trigger 1 of base image ` + onbuild + `:1)`},
	}
	for _, tc := range refused {
		t.Run("tenant a reads b's image by "+tc.name, func(t *testing.T) {
			got := e.submit(t, request{bearer: toks["a"], dockerfile: tc.dockerfile, spec: api.BuildSpec{Destinations: destA, Runner: tc.runner}})
			if got.status != http.StatusForbidden || got.code != api.CodeDenied || !strings.Contains(got.msg, tc.msg) {
				t.Fatalf("POST /v1/builds = %d %s %q, want 403 denied containing %q", got.status, got.code, got.msg, tc.msg)
			}
		})
	}
	// The refusal came before any layer of the onbuild image was fetched:
	// only its manifest and config were, to read the trigger.
	layerDigest := must[v1.Hash](t)(own.Digest())
	if _, err := os.Stat(filepath.Join(workspace.NewLayout(cfg.StateDir).BaseImages, "blobs", "sha256", layerDigest.Hex)); err == nil {
		t.Errorf("the layer of the refused onbuild image is in the base image store")
	}

	t.Run("tenant b builds from its own image", func(t *testing.T) {
		r := request{bearer: toks["b"], dockerfile: "FROM " + private + ":1\nCOPY hello.txt /hello.txt\n", spec: api.BuildSpec{Destinations: destB}}
		got := e.submit(t, r)
		if got.status != http.StatusAccepted {
			t.Fatalf("POST /v1/builds = %d %s %q, want 202", got.status, got.code, got.msg)
		}
		if b := e.wait(t, r.bearer, got.id); b.Status != api.StatusSucceeded {
			t.Fatalf("build %s = %s (%s), want succeeded", got.id, b.Status, b.Error)
		}
	})
	// B's image is now in the shared base store. A repository of A's own
	// that never held it must not get it by naming its digest.
	t.Run("tenant a names b's stored image by digest in its own repository", func(t *testing.T) {
		ref := reg + "/teama/app/x@" + must[v1.Hash](t)(privateImg.Digest()).String()
		r := request{bearer: toks["a"], dockerfile: "FROM " + ref + "\n", spec: api.BuildSpec{Destinations: destA}}
		got := e.submit(t, r)
		if got.status != http.StatusAccepted {
			t.Fatalf("POST /v1/builds = %d %s %q, want 202", got.status, got.code, got.msg)
		}
		// The base is fetched when the build runs; the fetch refuses it.
		if b := e.wait(t, r.bearer, got.id); b.Status != api.StatusFailed || !strings.Contains(b.Error, "resolving "+ref) {
			t.Fatalf("build %s = %s (%s), want failed naming %q", got.id, b.Status, b.Error, "resolving "+ref)
		}
	})
}

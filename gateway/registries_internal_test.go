package gateway

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/basestore"
)

// TestBaseImagesTrustRegistryCA: the base image store fetches from a
// registry over its ca_file's roots, the transport given apart from the
// credentials so that the store puts its bounds around it.
func TestBaseImagesTrustRegistryCA(t *testing.T) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := srv.Listener.Addr().String()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/team/base:latest")
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Registries: map[string]Registry{host: {CAFile: ca}}}
	_, _, fetch, _, err := cfg.registryAccess()
	if err != nil {
		t.Fatal(err)
	}
	s, err := basestore.New(t.TempDir(), fetch...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Config(context.Background(), ref); err != nil {
		t.Errorf("Config(%s) with the registry's ca_file = %v, want its config", ref, err)
	}
}

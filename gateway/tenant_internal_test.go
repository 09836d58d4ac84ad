package gateway

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/testmanager"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
)

// TestIdentityTenantCountsWithOwner: under a rule whose tenant is the
// identity, a build counts against the same limits as the identity's
// builds stored before tenants (no tenant: counted under their owner),
// so that an upgrade does not give every identity a second share.
func TestIdentityTenantCountsWithOwner(t *testing.T) {
	te := testmanager.New(t, testmanager.Options{NoWorkers: true, Builder: []jobs.Option{jobs.WithMaxQueued(10, 1)}})
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(polFile, fmt.Appendf(nil, `rules:
  - name: all
    match: {kind: token}
    allow:
      destinations: ["%s/**"]
    tenant: identity
`, te.Registry), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := policy.NewStore(polFile)
	if err != nil {
		t.Fatal(err)
	}
	authz := policyAuthorizer{store: store}
	id := auth.Identity{Name: "alice", Kind: auth.KindToken}
	ctxTar := func() *bytes.Reader {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		df := []byte("FROM scratch\n")
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Size: int64(len(df)), Mode: 0o644})
		tw.Write(df)
		tw.Close()
		return bytes.NewReader(buf.Bytes())
	}
	spec := api.BuildSpec{Destinations: []string{te.Registry + "/t/tenant:1"}}

	// As stored before tenants: no tenant.
	old := func(*jobs.ValidSpec, []byte, *dockerfile.Analysis) (jobs.Grant, error) { return jobs.Grant{}, nil }
	if _, err := te.M.Submit(context.Background(), jobs.SubmitRequest{Owner: id.Name, Identity: id, Spec: spec, Authorize: old}, ctxTar()); err != nil {
		t.Fatalf("Submit(old) = %v, want nil", err)
	}
	now := func(vs *jobs.ValidSpec, _ []byte, a *dockerfile.Analysis) (jobs.Grant, error) {
		_, g, err := authz.Authorize(context.Background(), id, vs, a)
		return g, err
	}
	_, err = te.M.Submit(context.Background(), jobs.SubmitRequest{Owner: id.Name, Identity: id, Spec: spec, Authorize: now}, ctxTar())
	var qf *jobs.QueueFullError
	if !errors.As(err, &qf) {
		t.Errorf("Submit(new) with one build of the identity stored before tenants queued = %v, want *jobs.QueueFullError (one queued per tenant)", err)
	}
}

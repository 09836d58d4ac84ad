package gateway_test

import (
	"archive/tar"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testoidc"
)

// TestCacheScopeProtectedRefs runs, through the gateway and its default
// policy cache.scope, the cache poisoning sequence: feature branches of
// another project of the group and of the project itself build the same
// Dockerfile first, then the project's protected branch builds and pushes
// a release. The release must run the step itself (its own content, not a
// feature branch's cached layer or result), and a second protected build
// must reuse it.
func TestCacheScopeProtectedRefs(t *testing.T) {
	e := newAuthzEnv(t)
	// The step's output differs every time it really runs.
	dockerfile := "FROM " + e.busybox + "\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n"
	build := func(project, ref string, protected bool, tag string) string {
		t.Helper()
		bearer := e.jwt(t, e.gitlab, e.gitlab.GitLabClaims(aud, testoidc.GitLab{ProjectPath: project, Ref: ref, Protected: protected}, time.Now()))
		dest := e.reg + "/" + project + ":" + tag
		r := e.submit(t, request{bearer: bearer, spec: api.BuildSpec{Destinations: []string{dest}}, dockerfile: dockerfile})
		if r.status != http.StatusAccepted {
			t.Fatalf("POST /v1/builds for %s %s = %d %s", project, ref, r.status, r.raw)
		}
		if b := e.wait(t, bearer, r.id); b.Status != api.StatusSucceeded {
			t.Fatalf("build of %s %s = %s (%s), want succeeded", project, ref, b.Status, b.Error)
		}
		return pushedFile(t, dest, "stamp")
	}
	other := build("group/other", "feature", false, "feature")
	branch := build("group/app", "feature", false, "feature")
	release := build("group/app", "main", true, "v2")
	again := build("group/app", "v3", true, "v3")
	if branch == other {
		t.Errorf("group/app's feature branch got group/other's cached step (%q)", other)
	}
	if release == other || release == branch {
		t.Errorf("group/app:v2 of the protected branch holds a feature branch's /stamp %q (group/other %q, group/app feature %q)", release, other, branch)
	}
	if again != release {
		t.Errorf("second protected build of group/app ran the step again (%q, first %q): want the protected cache", again, release)
	}
}

// pushedFile returns the content of file p in the image at ref.
func pushedFile(t *testing.T, ref, p string) string {
	t.Helper()
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(tag)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in %s: %v", p, ref, err)
		}
		if strings.TrimPrefix(h.Name, "/") == p {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

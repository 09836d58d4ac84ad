package basestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
)

// pushOnbuild puts a random image of n layers with ONBUILD triggers at
// repo:latest.
func (c *countingRegistry) pushOnbuild(t *testing.T, repo string, n int, triggers ...string) (name.Reference, v1.Image) {
	t.Helper()
	img, err := random.Image(1024, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.OnBuild = triggers
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(c.host + "/" + repo + ":latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref, img
}

// TestPrepareChecksOnbuildBeforeLayers checks that the ONBUILD triggers of
// a stage's base image are put to the policy once its config is fetched,
// and that a refusal leaves every layer of it unfetched: the runner, had
// Prepare succeeded, would have run the triggers.
func TestPrepareChecksOnbuildBeforeLayers(t *testing.T) {
	reg := startRegistry(t)
	evil := "evil.example.com/team-b/secret:1"
	base, baseImg := reg.pushOnbuild(t, "base/onbuild", 3, "RUN true", "COPY --from="+evil+" /secret /secret")
	other, _ := reg.push(t, "base/tools", 1024, 1)
	p, err := policy.Parse([]byte(`rules:
  - name: team-a
    match: {kind: token}
    allow:
      destinations: ["` + reg.host + `/team-a/*"]
      from: ["` + reg.host + `/base/*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	id := auth.Identity{Name: "a", Kind: auth.KindToken}
	var asked []string
	var analysis *dockerfile.Analysis
	check := func(image string, onbuild []string) error {
		asked = append(asked, image)
		d := p.CheckOnbuild(policy.Request{Identity: id, Dockerfile: analysis}, image, onbuild)
		if !d.Allowed {
			return &jobs.DeniedError{Rule: d.Rule, Reason: d.Reason}
		}
		return nil
	}

	s := newStore(t, WithCopies())
	ws := t.TempDir()
	ctxDir := filepath.Join(ws, "context")
	os.Mkdir(ctxDir, 0o755)
	// The COPY --from image is fetched first: its ONBUILD triggers would
	// not run, so it is not asked about; the stage's base is.
	df := "FROM scratch AS files\nCOPY --from=" + other.String() + " /x /x\nFROM " + base.String() + "\nCOPY --from=files /x /x\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	if analysis, err = dockerfile.Analyze([]byte(df), nil, ""); err != nil {
		t.Fatal(err)
	}
	req := &builder.Request{Workspace: ws, ContextDir: ctxDir, Dockerfile: "Dockerfile", Analysis: analysis, CheckBase: check}
	before := reg.blobs.Load()
	_, err = s.Prepare(context.Background(), req, &strings.Builder{})
	var de *jobs.DeniedError
	if !errors.As(err, &de) || de.Rule != "team-a" || !strings.Contains(de.Reason, "does not allow image "+evil) {
		t.Fatalf("Prepare(base with ONBUILD COPY --from=%s) = %v, want a denial by rule team-a naming the image", evil, err)
	}
	if !slices.Equal(asked, []string{base.Name()}) {
		t.Errorf("CheckBase asked about %q, want only the stage's base %s", asked, base.Name())
	}
	layers, _ := baseImg.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if s.Has(d) {
			t.Errorf("layer %s of the refused base image is in the store", d)
		}
	}
	// The configs of the other image and of the refused one, nothing more:
	// no layer is fetched before every image is resolved.
	if got := reg.blobs.Load() - before; got != 2 {
		t.Errorf("blob downloads = %d, want 2: no layer", got)
	}
	if _, err := os.Stat(filepath.Join(ws, LayoutDir, "index.json")); err == nil {
		t.Errorf("Prepare left a layout for the runner after a refusal")
	}

	// Without the trigger the same build is prepared.
	allowed, _ := reg.pushOnbuild(t, "base/onbuild", 1, "COPY --from="+other.String()+" /x /x")
	if _, err := s.Prepare(context.Background(), req, &strings.Builder{}); err != nil {
		t.Errorf("Prepare(base %s with an allowed trigger) = %v, want nil", allowed, err)
	}
}

func TestConfigFetchesNoLayer(t *testing.T) {
	reg := startRegistry(t)
	ref, img := reg.pushOnbuild(t, "base/onbuild", 2, "RUN echo hi")
	s := newStore(t)
	cfg, err := s.Config(context.Background(), ref)
	if err != nil || !slices.Equal(cfg.Config.OnBuild, []string{"RUN echo hi"}) {
		t.Fatalf("Config(%s) = %v, %v, want the ONBUILD trigger", ref, cfg, err)
	}
	if got := reg.blobs.Load(); got != 1 {
		t.Errorf("blob downloads = %d, want 1 (the config)", got)
	}
	m, _ := img.Manifest()
	if s.Has(m.Layers[0].Digest) {
		t.Errorf("Config fetched a layer")
	}
}

// TestPrepareFetchesOnbuildImages checks that an image named only by an
// ONBUILD trigger of a stage's base (COPY --from, RUN --mount from=) is
// handed to the runner with the Dockerfile's own images, as docker build
// pulls it, while a trigger naming a stage of the Dockerfile fetches
// nothing more.
func TestPrepareFetchesOnbuildImages(t *testing.T) {
	reg := startRegistry(t)
	copied, _ := reg.push(t, "base/copied", 1024, 1)
	mounted, _ := reg.push(t, "base/mounted", 1024, 1)
	base, _ := reg.pushOnbuild(t, "base/onbuild", 1,
		"COPY --from="+copied.String()+" /x /x",
		"RUN --mount=type=bind,from="+mounted.String()+",target=/m true",
		"COPY --from=files /x /y")
	df := "FROM scratch AS files\nFROM " + base.String() + "\n"
	analysis, err := dockerfile.Analyze([]byte(df), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	var asked []string
	req := &builder.Request{Workspace: ws, Analysis: analysis, CheckBase: func(image string, _ []string) error {
		asked = append(asked, image)
		return nil
	}}
	b, err := newStore(t, WithCopies()).Prepare(context.Background(), req, &strings.Builder{})
	if err != nil {
		t.Fatalf("Prepare(base with ONBUILD COPY --from=%s) = %v", copied, err)
	}
	var got []string
	for _, bi := range b.Images {
		got = append(got, bi.Name)
	}
	want := []string{base.Name(), copied.Name(), mounted.Name()}
	if !slices.Equal(got, want) {
		t.Errorf("Prepare(...).Images = %q, want %q", got, want)
	}
	if !slices.Equal(asked, []string{base.Name()}) {
		t.Errorf("CheckBase asked about %q, want only the stage's base %s", asked, base.Name())
	}
	idx, err := os.ReadFile(filepath.Join(ws, LayoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range want {
		if !strings.Contains(string(idx), `"`+n+`"`) {
			t.Errorf("index.json of the layout does not name %s:\n%s", n, idx)
		}
	}

	// A trigger that does not parse fails the preparation, naming the base.
	bad, _ := reg.pushOnbuild(t, "base/bad", 1, "COPY --from=")
	df = "FROM " + bad.String() + "\n"
	if req.Analysis, err = dockerfile.Analyze([]byte(df), nil, ""); err != nil {
		t.Fatal(err)
	}
	req.CheckBase = nil
	if _, err := newStore(t).Prepare(context.Background(), req, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), bad.Name()) {
		t.Errorf("Prepare(base with an unparsable trigger) = %v, want an error naming %s", err, bad.Name())
	}
}

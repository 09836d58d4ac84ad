package basestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/builder"
)

var _ builder.BasePreparer = (*Store)(nil)

// LayoutDir is the directory of the workspace where Prepare leaves the
// build's images.
const LayoutDir = "base"

// Prepare fetches the images req's Dockerfile pulls (req.Analysis:
// every stage's FROM after ARG substitution, COPY --from and RUN --mount
// images; stages and scratch skipped), and the images that the ONBUILD
// triggers of the stages' bases read (COPY --from, RUN --mount from=),
// into the store and links them into the workspace as an OCI layout. The
// policy checked the same analysis when the build was accepted, and
// req.CheckBase checks each base's triggers again before their images
// are fetched.
//
// Every image is resolved (manifests and config) before any layer is
// fetched: the blobs of all the build's images together must fit in the
// store's bound, or none of its layers is.
func (s *Store) Prepare(ctx context.Context, req *builder.Request, log io.Writer) (*builder.BaseImages, error) {
	a := req.Analysis
	if a == nil {
		return nil, errors.New("the build has no analysis of its Dockerfile")
	}
	refs := a.BuildImages()
	final := a.FinalBase()
	// The ONBUILD triggers of the images stages are built on run in the
	// build: they are checked before any layer is fetched, for every
	// runner (the tag may have moved since the build was accepted).
	stageRefs := a.StageImages()
	isStageBase := func(ref name.Reference) bool {
		return slices.ContainsFunc(stageRefs, func(r name.Reference) bool { return r.Name() == ref.Name() })
	}
	out := &builder.BaseImages{Layout: filepath.Join(req.Workspace, LayoutDir)}
	var imgs []*Image
	var layers [][]v1.Descriptor
	bud := newBudget(s.o.maxBytes)
	defer func() {
		for _, img := range imgs {
			s.Release(img)
		}
	}()
	seen := map[string]bool{}
	// refs grows by the images that bases' triggers read; those are no
	// stage's base, so their own triggers never run and add nothing.
	for i := 0; i < len(refs); i++ {
		ref := refs[i]
		if seen[ref.Name()] {
			continue
		}
		seen[ref.Name()] = true
		if slices.Contains(req.InsecureRegistries, ref.Context().RegistryStr()) {
			insecure, err := name.ParseReference(ref.String(), name.Insecure)
			if err != nil {
				return nil, err
			}
			ref = insecure
		}
		var check func(*v1.ConfigFile) error
		var triggers []string
		if isStageBase(ref) {
			check = func(cfg *v1.ConfigFile) error {
				triggers = cfg.Config.OnBuild
				if req.CheckBase == nil {
					return nil
				}
				return req.CheckBase(ref.Name(), triggers)
			}
		}
		img, ls, err := s.resolve(ctx, ref, check, bud)
		if err != nil {
			return nil, err
		}
		if len(triggers) > 0 {
			ob, err := a.Onbuild(ref.Name(), triggers)
			if err != nil {
				s.Release(img)
				return nil, fmt.Errorf("reading the ONBUILD triggers of %s: %w", ref.Name(), err)
			}
			for _, obi := range ob.Images {
				refs = append(refs, obi.Ref)
			}
		}
		imgs = append(imgs, img)
		layers = append(layers, ls)
		bi := builder.BaseImage{Name: ref.Name(), Digest: img.Digest.String()}
		out.Images = append(out.Images, bi)
		if final != nil && final.Name() == ref.Name() {
			out.Final = &bi
		}
		fmt.Fprintf(log, "base image %s: %s\n", bi.Name, bi.Digest)
	}
	for i, img := range imgs {
		if err := s.fetchLayers(ctx, img, layers[i]); err != nil {
			return nil, err
		}
	}
	if err := s.Link(out.Layout, imgs); err != nil {
		return nil, fmt.Errorf("handing base images to the build: %w", err)
	}
	return out, nil
}

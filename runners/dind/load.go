package dind

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/buildgw/buildgw/builder"
)

// refNameAnnotation names an image in the base image layout's index.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// baseImage is one of a build's base images, as its daemon gets it.
type baseImage struct {
	// ref is the reference as the Dockerfile names it (after ARG
	// substitution), and docker the same in the docker CLI's familiar
	// form, as the daemon's reference store keeps it.
	ref    name.Reference
	docker string
	// id is the image's ID in the daemon: its config's digest.
	id     v1.Hash
	config string   // blob path
	layers []string // blob paths, in order
}

// readBases lists the images of b's layout with their blobs.
func readBases(b *builder.BaseImages) ([]baseImage, error) {
	if b == nil || b.Layout == "" {
		return nil, nil
	}
	p, err := layout.FromPath(b.Layout)
	if err != nil {
		return nil, fmt.Errorf("reading the base images: %w", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading the base images: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base images: %w", err)
	}
	blob := func(h v1.Hash) string { return filepath.Join(b.Layout, "blobs", h.Algorithm, h.Hex) }
	var out []baseImage
	for _, desc := range im.Manifests {
		refName := desc.Annotations[refNameAnnotation]
		if refName == "" {
			continue
		}
		ref, err := name.ParseReference(refName, name.WeakValidation)
		if err != nil {
			return nil, fmt.Errorf("base image %q: %w", refName, err)
		}
		img, err := p.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("base image %s: %w", refName, err)
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, fmt.Errorf("base image %s: %w", refName, err)
		}
		bi := baseImage{ref: ref, docker: dockerRef(ref), id: m.Config.Digest, config: blob(m.Config.Digest)}
		for _, l := range m.Layers {
			if strings.Contains(string(l.MediaType), "zstd") {
				// dockerd 20.10 loads gzip and plain layers only.
				return nil, fmt.Errorf("base image %s: %s layers cannot be loaded into the job's daemon", refName, l.MediaType)
			}
			bi.layers = append(bi.layers, blob(l.Digest))
		}
		out = append(out, bi)
	}
	return out, nil
}

// dockerRef writes ref as the docker CLI and daemon do: Docker Hub images
// without their registry, official ones without library/.
func dockerRef(ref name.Reference) string {
	repo := ref.Context()
	n := repo.RegistryStr() + "/" + repo.RepositoryStr()
	if repo.RegistryStr() == name.DefaultRegistry {
		n = strings.TrimPrefix(repo.RepositoryStr(), "library/")
	}
	switch r := ref.(type) {
	case name.Digest:
		return n + "@" + r.DigestStr()
	case name.Tag:
		return n + ":" + r.TagStr()
	}
	return ref.String()
}

// digestRefs are the references by digest among imgs, each with the ID of
// its image, for DaemonConfig.DigestRefs.
func digestRefs(imgs []baseImage) map[string]string {
	refs := map[string]string{}
	for _, bi := range imgs {
		if _, ok := bi.ref.(name.Digest); ok {
			refs[bi.docker] = bi.id.String()
		}
	}
	return refs
}

// referenceStore renders refs (reference by digest → image ID) as the
// daemon's reference store file, data-root/image/DRIVER/repositories.json:
// {"Repositories": {NAME: {REFERENCE: ID}}}.
func referenceStore(refs map[string]string) []byte {
	repos := map[string]map[string]string{}
	for ref, id := range refs {
		repo, _, _ := strings.Cut(ref, "@")
		if repos[repo] == nil {
			repos[repo] = map[string]string{}
		}
		repos[repo][ref] = id
	}
	b, _ := json.Marshal(map[string]any{"Repositories": repos})
	return b
}

// LoadImages loads the base images of b into the daemon (POST
// /images/load) as one docker-save archive streamed from the layout: each
// image tagged as the Dockerfile names it, or, named by digest, known by
// that reference from the daemon's start (DaemonConfig.DigestRefs). It
// then checks that the daemon finds every image by its reference, so that
// the build never pulls.
func (d *Daemon) LoadImages(ctx context.Context, b *builder.BaseImages) (int, error) {
	imgs, err := readBases(b)
	if err != nil || len(imgs) == 0 {
		return 0, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeSaveArchive(pw, imgs)) }()
	defer pr.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/images/load?quiet=1", pr)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("loading the base images into the job's daemon: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("loading the base images into the job's daemon: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return 0, fmt.Errorf("loading the base images into the job's daemon: %w", err)
		}
		if m.Error != "" {
			return 0, fmt.Errorf("loading the base images into the job's daemon: %s", m.Error)
		}
	}
	for _, bi := range imgs {
		resp, err := d.Get(ctx, "/images/"+bi.docker+"/json")
		if err != nil {
			return 0, fmt.Errorf("checking base image %s in the job's daemon: %w", bi.docker, err)
		}
		var got struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || got.ID != bi.id.String() {
			return 0, fmt.Errorf("base image %s: the job's daemon does not find it after loading it (%s, image %q, want %s)", bi.docker, resp.Status, got.ID, bi.id)
		}
	}
	return len(imgs), nil
}

// writeSaveArchive writes imgs to w in docker save's format: each config
// as ID.json, each layer blob as it is stored (docker load decompresses
// gzip), and manifest.json last (docker load unpacks the whole archive
// before it reads it).
func writeSaveArchive(w io.Writer, imgs []baseImage) error {
	tw := tar.NewWriter(w)
	type entry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []entry
	written := map[string]bool{}
	add := func(path, name string) error {
		if written[name] {
			return nil
		}
		written[name] = true
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	}
	for _, bi := range imgs {
		e := entry{Config: bi.id.Hex + ".json", RepoTags: []string{}}
		if _, ok := bi.ref.(name.Tag); ok {
			e.RepoTags = append(e.RepoTags, bi.docker)
		}
		if err := add(bi.config, e.Config); err != nil {
			return err
		}
		for _, l := range bi.layers {
			n := filepath.Base(l) + ".tar"
			if err := add(l, n); err != nil {
				return err
			}
			e.Layers = append(e.Layers, n)
		}
		manifest = append(manifest, e)
	}
	b, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return err
	}
	return tw.Close()
}

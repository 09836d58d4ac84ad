package dind

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/ctxio"
	"github.com/buildgw/buildgw/ocilayout"
)

// Base layers kept as they are: the daemon's save stream holds every
// layer uncompressed, and compressing the final base's layers again would
// give blobs of other digests than the base's (the registry stores the
// base twice, pulls share nothing with it) and cost most of the export's
// time. So the export puts the base's own blobs, from the gateway's base
// layout, in place of the built image's leading layers that are the
// base's, in order, up to the first that is not. What the sandbox's
// stream says is never taken for a substituted blob's content: the
// gateway decompresses each base blob itself (verifyBase, while the build
// runs) and substitutes it only where the stream's layer, hashed on the
// way, has that same diff ID, which the built config names at that index.

// baseLayer is a layer of the final base image, as the gateway checked it.
type baseLayer struct {
	// desc is the blob's descriptor, with the media type the output's
	// Docker manifest gives it.
	desc   v1.Descriptor
	diffID v1.Hash // of the decompressed blob, computed here
	raw    int64   // decompressed size
}

// maxBaseJSON bounds the base's manifest and config.
const maxBaseJSON = ocilayout.MaxJSONBytes

// verifyBase reads the layers of b.Final from b's layout: each blob
// checked against its digest and decompressed to compute its diff ID and
// size. It stops at the first layer that cannot be substituted (a media
// type other than gzip or plain tar, or a diff ID that the base's config
// does not give): only a prefix is ever used. No final base (scratch)
// gives none.
func verifyBase(ctx context.Context, b *builder.BaseImages) ([]baseLayer, error) {
	if b == nil || b.Layout == "" || b.Final == nil {
		return nil, nil
	}
	fd, err := unix.Open(b.Layout, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the base layout: %w", err)
	}
	root := os.NewFile(uintptr(fd), b.Layout)
	defer root.Close()

	md, err := finalManifest(root, b.Final)
	if err != nil {
		return nil, fmt.Errorf("final base %s: %w", b.Final.Name, err)
	}
	mb, err := readVerified(root, md, maxBaseJSON)
	if err != nil {
		return nil, fmt.Errorf("final base %s: %w", b.Final.Name, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(mb))
	if err != nil {
		return nil, fmt.Errorf("final base %s: manifest: %w", b.Final.Name, err)
	}
	cb, err := readVerified(root, m.Config.Digest, maxBaseJSON)
	if err != nil {
		return nil, fmt.Errorf("final base %s: %w", b.Final.Name, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, fmt.Errorf("final base %s: config: %w", b.Final.Name, err)
	}
	var out []baseLayer
	for i, d := range m.Layers {
		if i >= len(cfg.RootFS.DiffIDs) {
			break
		}
		mt, gz := outputMediaType(d.MediaType)
		if mt == "" {
			break
		}
		l, err := hashLayer(ctx, root, d, gz)
		if err != nil {
			return nil, fmt.Errorf("final base %s: layer %d: %w", b.Final.Name, i, err)
		}
		if l.diffID != cfg.RootFS.DiffIDs[i] {
			break
		}
		l.desc.MediaType = mt
		out = append(out, l)
	}
	return out, nil
}

// finalManifest is the digest of final's image manifest in the layout at
// root: the manifest its index names final by, since final's digest is an
// index's when its reference names one for several platforms (the layout
// holds the image for the gateway's platform).
func finalManifest(root *os.File, final *builder.BaseImage) (v1.Hash, error) {
	f, _, err := ocilayout.OpenBeneath(root, "index.json", maxBaseJSON)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Close()
	var idx v1.IndexManifest
	if err := json.NewDecoder(io.LimitReader(f, maxBaseJSON)).Decode(&idx); err != nil {
		return v1.Hash{}, errors.New("index.json: not a valid OCI index")
	}
	// By digest first: that is what the gateway resolved.
	for _, byName := range []bool{false, true} {
		for _, d := range idx.Manifests {
			if byName && d.Annotations[refNameAnnotation] != final.Name || !byName && d.Digest.String() != final.Digest {
				continue
			}
			if !d.MediaType.IsImage() {
				return v1.Hash{}, fmt.Errorf("index.json names it by a %s, want an image manifest", d.MediaType)
			}
			return d.Digest, nil
		}
	}
	return v1.Hash{}, errors.New("not in the base layout")
}

// outputMediaType is the Docker media type of a base layer of media type
// mt in the output's manifest (the same bytes: only the name differs
// between OCI and Docker), and whether it is gzip-compressed; "" for a
// layer that is not substituted.
func outputMediaType(mt types.MediaType) (types.MediaType, bool) {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		return types.DockerLayer, true
	case types.DockerUncompressedLayer, types.OCIUncompressedLayer:
		return types.DockerUncompressedLayer, false
	}
	return "", false
}

// blobPath is where h's blob is beneath a layout's root.
func blobPath(h v1.Hash) (string, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return "", fmt.Errorf("unsupported digest %q", h)
	}
	for _, c := range h.Hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("unsupported digest %q", h)
		}
	}
	return "blobs/sha256/" + h.Hex, nil
}

// readVerified reads the blob h (at most max bytes) beneath root and
// checks it against h.
func readVerified(root *os.File, h v1.Hash, max int64) ([]byte, error) {
	p, err := blobPath(h)
	if err != nil {
		return nil, err
	}
	f, _, err := ocilayout.OpenBeneath(root, p, max)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if sum := sha256.Sum256(b); fmt.Sprintf("%x", sum) != h.Hex {
		return nil, fmt.Errorf("%s does not match its digest", p)
	}
	return b, nil
}

// hashLayer reads the layer blob d beneath root, checks it against d's
// digest and size, and returns its diff ID and uncompressed size.
func hashLayer(ctx context.Context, root *os.File, d v1.Descriptor, gz bool) (baseLayer, error) {
	l := baseLayer{desc: d}
	p, err := blobPath(d.Digest)
	if err != nil {
		return l, err
	}
	f, size, err := ocilayout.OpenBeneath(root, p, d.Size)
	if err != nil {
		return l, err
	}
	defer f.Close()
	if size != d.Size {
		return l, fmt.Errorf("%s is %d bytes, its descriptor says %d", p, size, d.Size)
	}
	comp := sha256.New()
	var r io.Reader = io.TeeReader(ctxio.Reader(ctx, f), comp)
	raw := sha256.New()
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return l, fmt.Errorf("decompressing %s: %w", p, err)
		}
		if l.raw, err = io.Copy(raw, zr); err != nil {
			return l, fmt.Errorf("decompressing %s: %w", p, err)
		}
		// The rest of the blob counts for its digest.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return l, fmt.Errorf("reading %s: %w", p, err)
		}
	} else if l.raw, err = io.Copy(raw, r); err != nil {
		return l, fmt.Errorf("reading %s: %w", p, err)
	}
	if sha256Hash(comp) != d.Digest {
		return l, fmt.Errorf("%s does not match its digest", p)
	}
	l.diffID = sha256Hash(raw)
	return l, nil
}

// linkBase puts the base layer l's blob into the output layout's blob
// directory: a hard link to the very file that was opened beneath the
// base layout's root (linkat AT_EMPTY_PATH: no path is resolved again),
// else a copy of it. The gateway's push checks its digest again.
func linkBase(layoutDir string, l baseLayer, blobs string) error {
	dst := filepath.Join(blobs, l.desc.Digest.Hex)
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	fd, err := unix.Open(layoutDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the base layout: %w", err)
	}
	root := os.NewFile(uintptr(fd), layoutDir)
	defer root.Close()
	p, err := blobPath(l.desc.Digest)
	if err != nil {
		return err
	}
	f, size, err := ocilayout.OpenBeneath(root, p, l.desc.Size)
	if err != nil {
		return err
	}
	defer f.Close()
	if size != l.desc.Size {
		return fmt.Errorf("%s is %d bytes, its descriptor says %d", p, size, l.desc.Size)
	}
	if err := unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH); err == nil {
		return nil
	}
	tmp, err := os.CreateTemp(blobs, ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, io.LimitReader(f, l.desc.Size)); err != nil {
		tmp.Close()
		return fmt.Errorf("copying %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// errRecompress is an export that hashed a layer without compressing it,
// taking it for a base layer by its size, and found it is not one: the
// export must be done again, compressing every layer.
var errRecompress = errors.New("a layer taken for a base layer is not one")

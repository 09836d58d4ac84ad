package dind

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildgw/buildgw/ocilayout"
)

// The export: the daemon's `docker save` stream (GET /images/get) turned,
// as it arrives, into an OCI image layout in the job's output directory,
// like the kaniko runner's. Each layer is gzip-compressed exactly once, on
// the way from the socket to its blob, so the gateway's push only uploads
// files; nothing uncompressed is written to disk. Layers of the final
// base are only hashed, and the base's blobs used (baselayers.go).

// maxSmallEntry is the size up to which save-stream entries (configs,
// manifests, tiny layers) are held in memory until manifest.json says what
// they are; larger ones are compressed as layers as they stream by.
const maxSmallEntry = 1 << 20

// maxConfig bounds an image config (which Docker saves as a small file).
const maxConfig = 8 << 20

// exportStats describes an export.
type exportStats struct {
	// id is the daemon's ID of the image exported: its config's digest,
	// which the layout keeps unless the config had to be rebuilt from
	// the API (an image without layers).
	id              v1.Hash
	raw, compressed int64
	layers          int
	reused          int // base layers kept as they are
}

// baseReuse is what an export may take from the final base image.
type baseReuse struct {
	layout string      // the base layout (builder.BaseImages.Layout)
	layers []baseLayer // the final base's leading layers, verified
	// skip: save-stream layers of a base layer's uncompressed size are
	// hashed, not compressed (errRecompress if one is not that layer).
	skip bool
}

// saveManifest is one entry of a docker-save manifest.json.
type saveManifest struct {
	Config string
	Layers []string
}

// savedBlob is one layer compressed on the fly: its blob's digest and
// size, and the digest of its uncompressed content (the diff ID).
type savedBlob struct {
	digest, diffID v1.Hash
	size, raw      int64
	// hashed: only hashed, no blob written (taken for a base layer).
	hashed bool
}

// exportLayout writes the image tag as an OCI layout in dir (which must
// be empty or absent) and returns it. The image's leading layers that are
// base's layers are base's blobs.
func (d *Daemon) exportLayout(ctx context.Context, tag, dir string, base baseReuse) (v1.Image, exportStats, error) {
	var st exportStats
	resp, err := d.Get(ctx, "/images/get?names="+url.QueryEscape(tag))
	if err != nil {
		return nil, st, fmt.Errorf("dind: exporting the image: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode == 500 && bytes.Contains(b, []byte("empty export")) {
			// Docker 20.10 cannot save an image without layers (FROM
			// scratch with only LABEL, CMD, EXPOSE...).
			img, id, err := d.exportConfigOnly(ctx, tag, dir)
			st.id = id
			return img, st, err
		}
		return nil, st, fmt.Errorf("dind: exporting the image: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, st, fmt.Errorf("dind: creating the output layout: %w", err)
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, st, fmt.Errorf("dind: creating the output layout: %w", err)
	}

	small := map[string][]byte{}
	big := map[string]savedBlob{}
	links := map[string]string{}
	tr := tar.NewReader(resp.Body)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("dind: reading the exported image: %w", err)
		}
		name := path.Clean(h.Name)
		switch h.Typeflag {
		case tar.TypeSymlink:
			// Docker saves a layer shared by two entries once, linking
			// the second to the first.
			links[name] = path.Join(path.Dir(name), h.Linkname)
		case tar.TypeLink:
			links[name] = path.Clean(h.Linkname)
		case tar.TypeReg:
			if h.Size <= maxSmallEntry || strings.HasSuffix(name, ".json") {
				if h.Size > maxConfig {
					return nil, st, fmt.Errorf("dind: exported image: %s is %d bytes", name, h.Size)
				}
				b, err := io.ReadAll(tr)
				if err != nil {
					return nil, st, fmt.Errorf("dind: reading the exported image: %w", err)
				}
				small[name] = b
				continue
			}
			var b savedBlob
			if base.skip && base.hasSize(h.Size) {
				b, err = hashBlob(tr)
			} else {
				b, err = compressBlob(tr, blobs)
			}
			if err != nil {
				return nil, st, fmt.Errorf("dind: compressing %s: %w", name, err)
			}
			big[name] = b
		}
	}
	resolve := func(name string) string {
		name = path.Clean(name)
		for i := 0; i < 8; i++ {
			t, ok := links[name]
			if !ok {
				break
			}
			name = t
		}
		return name
	}

	var ms []saveManifest
	if err := json.Unmarshal(small["manifest.json"], &ms); err != nil {
		return nil, st, fmt.Errorf("dind: exported image: reading manifest.json: %w", err)
	}
	if len(ms) != 1 {
		return nil, st, fmt.Errorf("dind: exported image holds %d images, want 1", len(ms))
	}
	m := ms[0]
	cfgBytes, ok := small[resolve(m.Config)]
	if !ok {
		return nil, st, fmt.Errorf("dind: exported image: config %s missing", m.Config)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgBytes))
	if err != nil {
		return nil, st, fmt.Errorf("dind: exported image: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, st, fmt.Errorf("dind: exported image: %d layers for %d diff IDs", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}

	man := v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(cfgBytes))
	if err != nil {
		return nil, st, err
	}
	if err := p.WriteBlob(cfgHash, io.NopCloser(bytes.NewReader(cfgBytes))); err != nil {
		return nil, st, fmt.Errorf("dind: writing the image config: %w", err)
	}
	man.Config = v1.Descriptor{MediaType: types.DockerConfigJSON, Size: cfgSize, Digest: cfgHash}
	st.id = cfgHash
	prefix := true
	for i, l := range m.Layers {
		name := resolve(l)
		want := cfg.RootFS.DiffIDs[i]
		if prefix && i < len(base.layers) && base.layers[i].diffID == want {
			// The layer must be the base's: the stream's content, hashed
			// here, is checked against the config's diff ID below.
			b, ok := big[name]
			if !ok {
				raw, ok := small[name]
				if !ok {
					return nil, st, fmt.Errorf("dind: exported image: layer %s missing", l)
				}
				b = savedBlob{diffID: sha256Hash(sha256Sum(raw)), raw: int64(len(raw)), hashed: true}
			}
			if b.diffID != want {
				return nil, st, fmt.Errorf("dind: exported image: layer %d has diff ID %s, the config says %s", i, b.diffID, want)
			}
			bl := base.layers[i]
			if err := linkBase(base.layout, bl, blobs); err != nil {
				return nil, st, fmt.Errorf("dind: taking base layer %d: %w", i, err)
			}
			man.Layers = append(man.Layers, bl.desc)
			st.raw += b.raw
			st.compressed += bl.desc.Size
			st.layers++
			st.reused++
			continue
		}
		prefix = false
		b, ok := big[name]
		if ok && b.hashed {
			return nil, st, errRecompress
		}
		if !ok {
			raw, ok := small[name]
			if !ok {
				return nil, st, fmt.Errorf("dind: exported image: layer %s missing", l)
			}
			if b, err = compressBlob(bytes.NewReader(raw), blobs); err != nil {
				return nil, st, fmt.Errorf("dind: compressing %s: %w", name, err)
			}
			big[name] = b
		}
		if b.diffID != cfg.RootFS.DiffIDs[i] {
			return nil, st, fmt.Errorf("dind: exported image: layer %d has diff ID %s, the config says %s", i, b.diffID, cfg.RootFS.DiffIDs[i])
		}
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: types.DockerLayer, Size: b.size, Digest: b.digest})
		st.raw += b.raw
		st.compressed += b.size
		st.layers++
	}
	mb, err := json.Marshal(man)
	if err != nil {
		return nil, st, err
	}
	mHash, mSize, err := v1.SHA256(bytes.NewReader(mb))
	if err != nil {
		return nil, st, err
	}
	if err := p.WriteBlob(mHash, io.NopCloser(bytes.NewReader(mb))); err != nil {
		return nil, st, fmt.Errorf("dind: writing the image manifest: %w", err)
	}
	if err := p.AppendDescriptor(v1.Descriptor{MediaType: types.DockerManifestSchema2, Size: mSize, Digest: mHash}); err != nil {
		return nil, st, fmt.Errorf("dind: writing the layout index: %w", err)
	}
	// Blobs streamed by that no manifest entry names (none, from
	// Docker) would only take room.
	used := map[v1.Hash]bool{}
	for _, l := range man.Layers {
		used[l.Digest] = true
	}
	for _, b := range big {
		if !b.hashed && !used[b.digest] {
			os.Remove(filepath.Join(blobs, b.digest.Hex))
		}
	}
	img, err := readLayout(ctx, dir)
	return img, st, err
}

// exportConfigOnly writes the layout of an image without layers from what
// the daemon's API says of it: its config from the image inspection, its
// history from the history endpoint. Both are read bounded.
func (d *Daemon) exportConfigOnly(ctx context.Context, tag, dir string) (v1.Image, v1.Hash, error) {
	var inspect struct {
		ID                                v1.Hash `json:"Id"`
		Architecture, Os, Variant, Author string
		Created                           time.Time
		Config                            v1.Config
		RootFS                            struct{ Layers []string }
	}
	if err := d.getJSON(ctx, "/images/"+url.PathEscape(tag)+"/json", &inspect); err != nil {
		return nil, v1.Hash{}, err
	}
	if len(inspect.RootFS.Layers) != 0 {
		return nil, v1.Hash{}, fmt.Errorf("dind: exporting the image: the daemon refused to save an image of %d layers", len(inspect.RootFS.Layers))
	}
	var hist []struct {
		Created   int64
		CreatedBy string
		Comment   string
	}
	if err := d.getJSON(ctx, "/images/"+url.PathEscape(tag)+"/history", &hist); err != nil {
		return nil, v1.Hash{}, err
	}
	cfg := v1.ConfigFile{
		Architecture: inspect.Architecture, OS: inspect.Os, Variant: inspect.Variant, Author: inspect.Author,
		Created: v1.Time{Time: inspect.Created}, Config: inspect.Config,
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}},
	}
	// The endpoint lists the newest step first; without layers, every
	// step is an empty layer.
	for i := len(hist) - 1; i >= 0; i-- {
		h := hist[i]
		cfg.History = append(cfg.History, v1.History{
			Created: v1.Time{Time: time.Unix(h.Created, 0).UTC()}, CreatedBy: h.CreatedBy, Comment: h.Comment, EmptyLayer: true,
		})
	}
	img, err := mutate.ConfigFile(empty.Image, &cfg)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("dind: building the image config: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("dind: creating the output layout: %w", err)
	}
	if err := p.AppendImage(img); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("dind: writing the output layout: %w", err)
	}
	img, err = readLayout(ctx, dir)
	return img, inspect.ID, err
}

// getJSON decodes the daemon's answer to GET path into v, reading at most
// maxConfig bytes.
func (d *Daemon) getJSON(ctx context.Context, path string, v any) error {
	resp, err := d.Get(ctx, path)
	if err != nil {
		return fmt.Errorf("dind: asking the daemon for %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxConfig+1))
	if err != nil {
		return fmt.Errorf("dind: reading %s: %w", path, err)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("dind: %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b[:min(len(b), 4096)])))
	}
	if len(b) > maxConfig {
		return fmt.Errorf("dind: %s: answer over %d bytes", path, maxConfig)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("dind: decoding %s: %w", path, err)
	}
	return nil
}

// compressBlob gzips r into a blob under dir, named by its digest, and
// returns the blob's and the content's digests and sizes.
func compressBlob(r io.Reader, dir string) (savedBlob, error) {
	var b savedBlob
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return b, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	raw, comp := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, comp)}
	zw, err := gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	if err != nil {
		return b, err
	}
	n, err := io.Copy(zw, io.TeeReader(r, raw))
	if err != nil {
		return b, err
	}
	if err := zw.Close(); err != nil {
		return b, err
	}
	if err := f.Close(); err != nil {
		return b, err
	}
	b.raw, b.size = n, cw.n
	b.diffID, b.digest = sha256Hash(raw), sha256Hash(comp)
	if err := os.Rename(f.Name(), filepath.Join(dir, b.digest.Hex)); err != nil {
		return b, err
	}
	ok = true
	return b, nil
}

// hashBlob reads r through, returning its diff ID and size only.
func hashBlob(r io.Reader) (savedBlob, error) {
	raw := sha256.New()
	n, err := io.Copy(raw, r)
	if err != nil {
		return savedBlob{}, err
	}
	return savedBlob{diffID: sha256Hash(raw), raw: n, hashed: true}, nil
}

func sha256Sum(b []byte) hash.Hash {
	h := sha256.New()
	h.Write(b)
	return h
}

// hasSize reports whether a base layer is n bytes uncompressed.
func (b baseReuse) hasSize(n int64) bool {
	for _, l := range b.layers {
		if l.raw == n {
			return true
		}
	}
	return false
}

func sha256Hash(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// readLayout returns the one image of the layout in dir, read through
// ocilayout like the kaniko runner's output although the gateway wrote it:
// one reader for every layout a build produced.
func readLayout(ctx context.Context, dir string) (v1.Image, error) {
	img, err := ocilayout.Image(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("dind: reading the output layout: %w", err)
	}
	return img, nil
}

// clearDir removes what dir holds, keeping dir (made by the gateway, with
// its mode).
func clearDir(dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range es {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// Package ocilayout reads the OCI image layout that a build left in its
// output directory, as the one image it holds, trusting nothing in it.
//
// The directory is written from inside a build sandbox, where any RUN step
// can replace what is there: a symbolic link to a host file or device, a
// FIFO, a file of any size. The gateway reads it as root on the host, so
// every file is opened with openat2 beneath the layout's root, refusing
// symbolic links, magic links and mount crossings on the way
// (RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS,
// RESOLVE_NO_XDEV), non-blocking so that a FIFO cannot hold the open, and
// must turn out to be a regular file of bounded size. Every blob is checked
// against its digest; layers open lazily, through the same opener, when the
// image is pushed. Errors name the entry at fault and never quote its
// content.
package ocilayout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"regexp"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// MaxJSONBytes bounds index.json, the image manifest and the image config:
// small files, which are read whole into memory.
const MaxJSONBytes = 8 << 20

// DefaultMaxBlobBytes is the default bound on a layer blob.
const DefaultMaxBlobBytes = 32 << 30

// Option configures Image.
type Option func(*options) error

type options struct {
	maxBlob int64
}

// WithMaxBlobBytes bounds the size of each layer blob; a larger one fails
// the read. Default DefaultMaxBlobBytes (32 GiB).
func WithMaxBlobBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("ocilayout: max blob bytes %d, want > 0", n)
		}
		o.maxBlob = n
		return nil
	}
}

// Image returns the one image of the OCI layout in dir. It is the image,
// not the layout's index, so that the pushed digest is the image's. The
// index, manifest and config are read and verified now, and every layer
// blob is checked to be a regular file of the size its descriptor gives;
// layer contents are read, and checked against their digests, when the
// image's layers are read.
//
// ctx bounds the reads done here. The layers' readers are not bound by it:
// they read regular files of bounded size, which cannot block.
func Image(ctx context.Context, dir string, opts ...Option) (v1.Image, error) {
	o := options{maxBlob: DefaultMaxBlobBytes}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	// The image outlives this call (its layers open lazily); the file's
	// finalizer closes the root once the image is gone.
	l := &layout{root: os.NewFile(uintptr(fd), dir), maxBlob: o.maxBlob}

	ib, err := l.readFile(ctx, "index.json", MaxJSONBytes)
	if err != nil {
		return nil, err
	}
	var idx v1.IndexManifest
	if err := unmarshal(ib, &idx); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("index.json lists %d manifests, want 1", len(idx.Manifests))
	}
	desc := idx.Manifests[0]
	switch desc.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	default:
		return nil, fmt.Errorf("index.json: manifest has media type %q, want an image manifest", desc.MediaType)
	}
	if l.manifest, err = l.readBlob(ctx, desc, MaxJSONBytes); err != nil {
		return nil, err
	}
	l.mediaType = desc.MediaType
	var m v1.Manifest
	if err := unmarshal(l.manifest, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	if l.config, err = l.readBlob(ctx, m.Config, MaxJSONBytes); err != nil {
		return nil, err
	}
	l.layers = map[v1.Hash]v1.Descriptor{}
	for _, d := range m.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name, err := blobName(d)
		if err != nil {
			return nil, err
		}
		if d.Size < 0 || d.Size > l.maxBlob {
			return nil, fmt.Errorf("layer %s: size %d out of range (at most %d)", d.Digest, d.Size, l.maxBlob)
		}
		f, err := l.open(name, d.Size)
		if err != nil {
			return nil, err
		}
		size, err := fileSize(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if size != d.Size {
			return nil, fmt.Errorf("%s is %d bytes, its descriptor says %d", name, size, d.Size)
		}
		l.layers[d.Digest] = d
	}
	img, err := partial.CompressedToImage(l)
	if err != nil {
		return nil, fmt.Errorf("reading the image: %w", err)
	}
	return img, nil
}

// layout is the verified part of a layout, and the root its layers are
// read from. It is a partial.CompressedImageCore.
type layout struct {
	root      *os.File
	maxBlob   int64
	mediaType types.MediaType
	manifest  []byte
	config    []byte
	layers    map[v1.Hash]v1.Descriptor
}

func (l *layout) RawManifest() ([]byte, error)        { return l.manifest, nil }
func (l *layout) RawConfigFile() ([]byte, error)      { return l.config, nil }
func (l *layout) MediaType() (types.MediaType, error) { return l.mediaType, nil }

// LayerByDigest returns a layer of the manifest; partial answers for the
// config itself.
func (l *layout) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	d, ok := l.layers[h]
	if !ok {
		return nil, fmt.Errorf("layer %s is not in the manifest", h)
	}
	return &layer{l: l, desc: d}, nil
}

type layer struct {
	l    *layout
	desc v1.Descriptor
}

func (y *layer) Digest() (v1.Hash, error)            { return y.desc.Digest, nil }
func (y *layer) Size() (int64, error)                { return y.desc.Size, nil }
func (y *layer) MediaType() (types.MediaType, error) { return y.desc.MediaType, nil }

// Compressed opens the layer's blob afresh, through the same checks as
// everything else, and checks its content against the digest as it is
// read: the last Read fails if it does not match.
func (y *layer) Compressed() (io.ReadCloser, error) {
	name, err := blobName(y.desc)
	if err != nil {
		return nil, err
	}
	f, err := y.l.open(name, y.desc.Size)
	if err != nil {
		return nil, err
	}
	return &verifier{f: f, name: name, r: io.LimitReader(f, y.desc.Size+1), h: sha256.New(), want: y.desc}, nil
}

// verifier reads a blob and fails at its end unless it has the size and
// digest of its descriptor.
type verifier struct {
	f    *os.File
	name string
	r    io.Reader
	h    hash.Hash
	n    int64
	want v1.Descriptor
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.want.Size {
		return n, fmt.Errorf("%s is larger than its descriptor's %d bytes", v.name, v.want.Size)
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.want.Size {
			return n, fmt.Errorf("%s is %d bytes, its descriptor says %d", v.name, v.n, v.want.Size)
		}
		if hex.EncodeToString(v.h.Sum(nil)) != v.want.Digest.Hex {
			return n, fmt.Errorf("%s does not match its digest", v.name)
		}
	}
	return n, err
}

func (v *verifier) Close() error { return v.f.Close() }

var hexDigest = regexp.MustCompile(`^[0-9a-f]{64}$`)

// blobName is where d's blob is in a layout; only sha256 digests, so that
// no name from the layout becomes a path.
func blobName(d v1.Descriptor) (string, error) {
	if d.Digest.Algorithm != "sha256" || !hexDigest.MatchString(d.Digest.Hex) {
		return "", fmt.Errorf("unsupported digest %q", d.Digest)
	}
	return "blobs/sha256/" + d.Digest.Hex, nil
}

// readBlob reads d's blob whole, at most max bytes, and checks its size
// and digest.
func (l *layout) readBlob(ctx context.Context, d v1.Descriptor, max int64) ([]byte, error) {
	name, err := blobName(d)
	if err != nil {
		return nil, err
	}
	if d.Size < 0 || d.Size > max {
		return nil, fmt.Errorf("%s: size %d out of range (at most %d)", name, d.Size, max)
	}
	b, err := l.readFile(ctx, name, d.Size)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%s is %d bytes, its descriptor says %d", name, len(b), d.Size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, fmt.Errorf("%s does not match its digest", name)
	}
	return b, nil
}

// readFile reads the file name beneath the root whole, failing if it holds
// more than max bytes.
func (l *layout) readFile(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := l.open(name, max)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Read in chunks, so that a cancelled job stops between them.
	var b []byte
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := f.Read(buf)
		b = append(b, buf[:n]...)
		if int64(len(b)) > max {
			return nil, fmt.Errorf("%s is larger than %d bytes", name, max)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
	}
	return b, nil
}

// open opens name beneath the root, see OpenBeneath.
func (l *layout) open(name string, max int64) (*os.File, error) {
	f, _, err := OpenBeneath(l.root, name, max)
	// The root's finalizer must not close it under the call above.
	runtime.KeepAlive(l.root)
	return f, err
}

// OpenBeneath opens name beneath the directory root (which a sandbox may
// have written) for reading: only through directories, never through a
// link or onto another mount, and only a regular file of at most max
// bytes, which it returns with its size. O_NONBLOCK makes opening a FIFO
// return at once, so that it can be refused. root may be opened O_PATH.
func OpenBeneath(root *os.File, name string, max int64) (*os.File, int64, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	var err error
	// openat2 answers EAGAIN when a rename elsewhere raced the lookup.
	for range 8 {
		if fd, err = unix.Openat2(int(root.Fd()), name, &how); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, unix.ELOOP):
		return nil, 0, fmt.Errorf("%s is a symbolic link, or is reached through one", name)
	case errors.Is(err, unix.EXDEV):
		return nil, 0, fmt.Errorf("%s leads out of its directory", name)
	case errors.Is(err, unix.ENOENT):
		return nil, 0, fmt.Errorf("%s is missing: %w", name, os.ErrNotExist)
	default:
		return nil, 0, fmt.Errorf("opening %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, 0, fmt.Errorf("%s is a %s, not a regular file", name, fileType(st.Mode))
	}
	if st.Size > max {
		f.Close()
		return nil, 0, fmt.Errorf("%s is %d bytes, more than the %d allowed: %w", name, st.Size, max, ErrTooLarge)
	}
	return f, st.Size, nil
}

// ErrTooLarge is a file over the size its reader allows.
var ErrTooLarge = errors.New("file too large")

func fileSize(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFLNK:
		return "symbolic link"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}

// unmarshal decodes JSON without quoting the input in its error: the file
// may be a host file a build linked in, whose bytes must not reach the
// build's error.
func unmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		case errors.As(err, &te):
			return fmt.Errorf("not valid JSON: field %q has the wrong type", te.Field)
		}
		// v1.Hash and other text unmarshalers quote what they refuse.
		return errors.New("not a valid OCI document")
	}
	return nil
}

var (
	_ partial.CompressedImageCore = (*layout)(nil)
	_ partial.CompressedLayer     = (*layer)(nil)
)

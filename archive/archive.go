// Package archive unpacks build-context tarballs uploaded by untrusted
// clients so that kaniko can build from them.
//
// The archives are hostile: every entry is validated before it touches the
// disk, every write is made relative to a directory the extraction created
// itself, one path component at a time and never through a symlink, and no
// symlink is created that could lead a later reader (kaniko follows symlinks
// in the context) out of that directory.
package archive

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	defaultMaxBytes   = 2 << 30
	defaultMaxFiles   = 100000
	defaultMaxNameLen = 4096
)

// Limits bound what one archive may hold. Zero fields take the defaults.
type Limits struct {
	MaxBytes   int64 // total bytes of regular-file content after decompression; default 2 GiB
	MaxFiles   int   // number of entries; default 100000
	MaxNameLen int   // path (and link target) length; default 4096
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = defaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = defaultMaxFiles
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = defaultMaxNameLen
	}
	return l
}

// maxErrorEntry keeps error messages (which end up in HTTP responses)
// readable when an entry name is huge.
const maxErrorEntry = 256

// Error is returned for every rejection caused by the archive's content, as
// opposed to I/O errors of the destination or errors reading the upload.
type Error struct {
	Entry    string // the tar entry at fault; "" if none
	Reason   string
	TooLarge bool // a Limits bound was exceeded
}

var _ error = (*Error)(nil)

func (e *Error) Error() string {
	if e.Entry == "" {
		return "context archive: " + e.Reason
	}
	entry := e.Entry
	if len(entry) > maxErrorEntry {
		entry = entry[:maxErrorEntry] + "..."
	}
	return fmt.Sprintf("context entry %q: %s", entry, e.Reason)
}

// Option configures Extract.
type Option func(*options)

type options struct {
	chown    bool
	uid, gid int
}

// WithOwner makes Extract Lchown every entry it creates to uid:gid, for when
// the gateway runs as root but the build sandbox runs as another user.
func WithOwner(uid, gid int) Option {
	return func(o *options) {
		o.chown = true
		o.uid, o.gid = uid, gid
	}
}

// Stats describes a successful extraction.
type Stats struct {
	SHA256 string // hex sha256 of the bytes read from r, as uploaded
	Files  int    // entries extracted (files, directories, symlinks, hardlinks)
	Bytes  int64  // regular-file content bytes written
}

// Extract reads a tar stream, plain or gzip-compressed, from r and writes it
// under dir, which must exist and be empty.
//
// Rejections caused by the archive are returned as *Error. Errors returned by
// r (other than a premature end) and cancellation of ctx are returned wrapped,
// so callers can still recognise e.g. *http.MaxBytesError. On error, dir may
// hold a partial extraction and should be discarded; nothing is ever written
// outside it. r is read to its end (up to a bound past the end-of-archive
// marker) so that the hash covers the whole upload.
func Extract(ctx context.Context, r io.Reader, dir string, lim Limits, opts ...Option) (*Stats, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}

	root, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening context directory: %w", err)
	}
	defer root.Close()
	if err := checkEmpty(root); err != nil {
		return nil, fmt.Errorf("context directory %s: %w", dir, err)
	}

	src := &sourceReader{ctx: ctx, r: r}
	h := newAsyncHash(sha256.New())
	defer h.close()
	x := newExtractor(int(root.Fd()), lim.withDefaults(), o, src)
	defer x.close()
	if err := x.run(ctx, bufio.NewReader(io.TeeReader(src, h))); err != nil {
		return nil, err
	}
	return &Stats{
		SHA256: hex.EncodeToString(h.Sum()),
		Files:  x.files,
		Bytes:  x.bytes,
	}, nil
}

func checkEmpty(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if len(names) > 0 {
		return errors.New("not empty")
	}
	return nil
}

// sourceReader remembers why the upload itself failed, so that such failures
// are not mistaken for a corrupt archive, and stops reading once ctx is done.
type sourceReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// expandLimitError is returned by countingReader once the decompressed
// stream exceeds its bound.
type expandLimitError struct{}

func (expandLimitError) Error() string { return "archive expands beyond the limit" }

// countingReader bounds the decompressed stream, so that a gzip bomb made of
// headers or skipped data cannot keep us busy, and tracks how many zero bytes
// were read last, to recognise the end-of-archive marker.
type countingReader struct {
	r       io.Reader
	n       int64
	limit   int64
	zeroRun int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, expandLimitError{}
	}
	if rem := c.limit - c.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	last := -1
	for i := n - 1; i >= 0; i-- {
		if p[i] != 0 {
			last = i
			break
		}
	}
	if last < 0 {
		c.zeroRun += int64(n)
	} else {
		c.zeroRun = int64(n - 1 - last)
	}
	return n, err
}

// WithDefaults returns l with the defaults in place of its zero fields.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

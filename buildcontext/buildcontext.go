// Package buildcontext makes the archive a client uploads as a build context: it walks a directory, honours .dockerignore the way Docker does, and streams a gzip'd tar without holding it in memory or on disk.
package buildcontext

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/buildgw/buildgw/internal/ctxio"
)

// Option configures Write.
type Option func(*options)

type options struct {
	dockerfile string // slash- or OS-separated, relative to the context dir
	level      int
}

func makeOptions(opts []Option) *options {
	o := &options{dockerfile: "Dockerfile", level: gzip.BestSpeed}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// WithDockerfile names the Dockerfile (relative to dir, default "Dockerfile"); it and .dockerignore are always sent even if .dockerignore excludes them (Docker's behaviour), and a Dockerfile-specific ignore file `<Dockerfile>.dockerignore` takes precedence over .dockerignore (BuildKit behaviour).
func WithDockerfile(rel string) Option {
	return func(o *options) {
		if rel != "" {
			o.dockerfile = rel
		}
	}
}

// WithCompression sets the gzip level (default gzip.BestSpeed, since the gateway is usually on a fast network and CPU is the bottleneck; gzip.NoCompression = send plain tar, no gzip wrapper at all).
func WithCompression(level int) Option {
	return func(o *options) { o.level = level }
}

// copyBufSize is used both for buffering the output (tar headers are
// 512-byte writes, too small to hand to a pipe or socket one by one) and
// for copying file contents.
const copyBufSize = 32 << 10

// Write streams the context of dir as a (gzip'd) tar into w. It returns the number of files written.
//
// The count is of non-directory entries (regular files and symlinks), the
// same number Size reports. On error the stream is left truncated, without
// a tar trailer, so the receiver cannot mistake a partial context for a
// complete one.
func Write(ctx context.Context, w io.Writer, dir string, opts ...Option) (int, error) {
	o := makeOptions(opts)
	if o.level != gzip.NoCompression && (o.level < gzip.HuffmanOnly || o.level > gzip.BestCompression) {
		return 0, fmt.Errorf("invalid compression level %d", o.level)
	}
	wk, err := newWalker(dir, o)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	bw := bufio.NewWriterSize(w, copyBufSize)
	out := io.Writer(bw)
	var gz *gzip.Writer
	if o.level != gzip.NoCompression {
		if gz, err = gzip.NewWriterLevel(bw, o.level); err != nil {
			return 0, fmt.Errorf("creating gzip writer: %w", err)
		}
		out = gz
	}
	tw := tar.NewWriter(out)
	buf := make([]byte, copyBufSize)

	n := 0
	err = wk.walk(ctx, func(rel string, fi fs.FileInfo) error {
		if err := writeEntry(ctx, tw, wk.abs(rel), rel, fi, buf); err != nil {
			return err
		}
		if !fi.IsDir() {
			n++
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	// Checked again so a cancellation during the last file can't be
	// followed by a valid trailer.
	if err := ctx.Err(); err != nil {
		return n, err
	}

	if err := tw.Close(); err != nil {
		return n, fmt.Errorf("finishing tar stream: %w", err)
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return n, fmt.Errorf("finishing gzip stream: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("flushing build context: %w", err)
	}
	return n, nil
}

// Reader is a convenience: it runs Write in a goroutine into an io.Pipe and returns the read end; the error of Write is delivered through the pipe (CloseWithError). Closing the reader stops the writer.
//
// The caller must read to EOF or Close the reader, or the goroutine leaks.
func Reader(ctx context.Context, dir string, opts ...Option) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		_, err := Write(ctx, pw, dir, opts...)
		pw.CloseWithError(err) // nil error means EOF for the reader
	}()
	return pr
}

// Size walks dir with the same ignore rules and returns the total bytes of regular file content and file count, so a progress bar can show a total (upload size is unknown after gzip, so the bar tracks uncompressed bytes).
//
// files counts regular files and symlinks, matching Write's return value.
func Size(dir string, opts ...Option) (files int, bytes int64, err error) {
	wk, err := newWalker(dir, makeOptions(opts))
	if err != nil {
		return 0, 0, err
	}
	err = wk.walk(context.Background(), func(_ string, fi fs.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		files++
		if fi.Mode().IsRegular() {
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes, err
}

// writeEntry adds one walked entry, already vetted by the walker to be a
// directory, regular file or symlink.
func writeEntry(ctx context.Context, tw *tar.Writer, abs, rel string, fi fs.FileInfo, buf []byte) error {
	hdr := &tar.Header{
		Name: rel,
		Mode: tarMode(fi.Mode()),
		// Whole seconds, like Docker: keeps headers in plain USTAR and the
		// output independent of filesystem timestamp precision.
		ModTime: fi.ModTime().Truncate(time.Second),
		// Uid, Gid, Uname and Gname stay zero: the builder should not see
		// (or depend on) the client's accounts.
	}
	switch {
	case fi.IsDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(abs)
		if err != nil {
			return fmt.Errorf("reading symlink %s: %w", rel, err)
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	default:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = fi.Size()
	}
	if hdr.Typeflag != tar.TypeReg {
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
		return nil
	}

	// Open before writing the header so an unreadable file fails cleanly.
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("opening %s: %w", rel, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	// The header has promised hdr.Size bytes: a file that grows meanwhile is
	// cut there, one that shrinks cannot be sent faithfully.
	src := io.LimitReader(ctxio.Reader(ctx, f), hdr.Size)
	copied, err := io.CopyBuffer(tw, src, buf)
	if err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	if copied != hdr.Size {
		return fmt.Errorf("writing %s: file shrank from %d to %d bytes while being read", rel, hdr.Size, copied)
	}
	return nil
}

// tarMode converts permission and special bits to their tar (POSIX) values.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

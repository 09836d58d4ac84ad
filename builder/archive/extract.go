package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

const (
	blockSize = 512
	// maxComponentLen is NAME_MAX on Linux: a longer component fails with
	// ENAMETOOLONG, which is the archive's fault, so reject it up front.
	maxComponentLen = 255
	// maxTrailer bounds what is read after the end-of-archive marker. tar
	// pads to its record size (10 KiB by default); reading the rest verifies
	// the gzip checksum and lets the hash cover the whole upload.
	maxTrailer = 1 << 20
	// entryOverhead is what an entry may add to the decompressed stream
	// besides its content and names (header blocks, PAX records, padding).
	entryOverhead = 16 << 10
	// maxSymlinks matches Linux's MAXSYMLINKS.
	maxSymlinks = 40
)

// extractor holds the state of one Extract call.
type extractor struct {
	root *os.Root
	lim  Limits
	opts options
	src  *sourceReader

	// dirs records every directory created so far. Directories are never
	// removed or replaced, so a path found here is a real directory reached
	// through real directories only; this also spares re-checking every
	// parent of every entry.
	dirs dirTree

	entries int // headers seen, against MaxFiles
	implied int // parent directories created without an entry
	files   int
	bytes   int64

	// buf carries file content to disk in large writes: os.File's
	// ReadFrom would copy through 32 KiB, one write syscall for each.
	buf []byte
}

// copyBufferSize is the size of an extractor's copy buffer.
const copyBufferSize = 256 << 10

// writerOnly hides a writer's ReadFrom so io.CopyBuffer uses the buffer.
type writerOnly struct{ io.Writer }

func newExtractor(root *os.Root, lim Limits, o options, src *sourceReader) *extractor {
	return &extractor{root: root, lim: lim, opts: o, src: src, dirs: newDirTree(), buf: make([]byte, copyBufferSize)}
}

func (x *extractor) run(ctx context.Context, br *bufio.Reader) error {
	var dec io.Reader = br
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return x.archiveErr("", err)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return x.archiveErr("", err)
		}
		defer gz.Close()
		dec = gz
	}

	// Everything but file content is bounded per entry, so this bounds the
	// work any stream can cause without rejecting legitimate archives.
	perEntry := entryOverhead + 2*int64(x.lim.MaxNameLen)
	cr := &countingReader{r: dec, limit: addSat(x.lim.MaxBytes, mulSat(int64(x.lim.MaxFiles), perEntry))}
	tr := tar.NewReader(cr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		// ErrInsecurePath (GODEBUG tarinsecurepath=0) comes with a valid
		// header; our own checks below decide.
		if err != nil && (hdr == nil || !errors.Is(err, tar.ErrInsecurePath)) {
			return x.archiveErr("", err)
		}
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}

	// archive/tar treats a stream that stops at a header boundary as a
	// complete archive; insist on the two zero blocks so that a truncated
	// upload is not silently built with files missing.
	if cr.n == 0 {
		return x.archiveErr("", errors.New("empty archive"))
	}
	if cr.n%blockSize != 0 || cr.zeroRun < 2*blockSize {
		return x.archiveErr("", errors.New("missing end-of-archive marker"))
	}
	n, err := io.Copy(io.Discard, io.LimitReader(dec, maxTrailer+1))
	if err != nil {
		return x.archiveErr("", err)
	}
	if n > maxTrailer {
		return &Error{Reason: fmt.Sprintf("more than %d bytes after the end of the archive", maxTrailer), TooLarge: true}
	}
	return x.setDirTimes()
}

// archiveErr classifies an error met while decoding the stream.
func (x *extractor) archiveErr(entry string, err error) error {
	if x.src.err != nil && !errors.Is(x.src.err, io.ErrUnexpectedEOF) {
		if errors.Is(x.src.err, context.Canceled) || errors.Is(x.src.err, context.DeadlineExceeded) {
			return x.src.err
		}
		return fmt.Errorf("reading context archive: %w", x.src.err)
	}
	if errors.Is(err, expandLimitError{}) {
		return &Error{Entry: entry, Reason: "archive expands to too many bytes", TooLarge: true}
	}
	return &Error{Entry: entry, Reason: "truncated or corrupt archive: " + err.Error()}
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	name := hdr.Name
	x.entries++
	if x.entries > x.lim.MaxFiles {
		return &Error{Entry: name, Reason: fmt.Sprintf("archive has more than %d entries", x.lim.MaxFiles), TooLarge: true}
	}

	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // parsed by archive/tar; nothing to create
	// archive/tar already reports the legacy TypeRegA as TypeReg; it is
	// listed in case that ever changes.
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return &Error{Entry: name, Reason: "device nodes are not allowed"}
	case tar.TypeFifo:
		return &Error{Entry: name, Reason: "fifos are not allowed"}
	default:
		return &Error{Entry: name, Reason: fmt.Sprintf("unsupported entry type %q", hdr.Typeflag)}
	}

	rel, reason := cleanPath(name, x.lim.MaxNameLen)
	if reason != "" {
		return &Error{Entry: name, Reason: reason}
	}
	if rel == "." {
		if hdr.Typeflag == tar.TypeDir {
			return nil // "./" is common; the context directory already exists
		}
		return &Error{Entry: name, Reason: "entry would replace the context directory"}
	}

	// Validate link targets before creating anything for the entry.
	var err error
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		err = x.checkSymlink(name, rel, hdr.Linkname)
	case tar.TypeLink:
		err = x.checkHardlink(name, rel, hdr.Linkname)
	}
	if err != nil {
		return err
	}

	parent, err := x.mkdirParents(name, rel)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.dir(hdr, rel, parent)
	case tar.TypeSymlink:
		err = x.symlink(hdr, rel)
	case tar.TypeLink:
		err = x.hardlink(hdr, rel)
	default:
		err = x.file(tr, hdr, rel)
	}
	if err != nil {
		return err
	}
	x.files++
	return nil
}

// cleanPath validates an archive path and returns it cleaned, or the reason
// it is rejected.
func cleanPath(p string, maxLen int) (string, string) {
	switch {
	case p == "":
		return "", "empty path"
	case strings.IndexByte(p, 0) >= 0:
		return "", "path contains a NUL byte"
	case len(p) > maxLen:
		return "", fmt.Sprintf("path is longer than %d bytes", maxLen)
	case path.IsAbs(p):
		return "", "absolute path"
	}
	clean := path.Clean(p)
	if escapes(clean) {
		return "", "path escapes the context"
	}
	for c := range strings.SplitSeq(clean, "/") {
		if len(c) > maxComponentLen {
			return "", fmt.Sprintf("path component is longer than %d bytes", maxComponentLen)
		}
	}
	return clean, ""
}

// escapes reports whether a cleaned relative path leaves its base.
func escapes(clean string) bool {
	return clean == ".." || strings.HasPrefix(clean, "../")
}

// checkSymlink rejects symlinks that could resolve outside the context.
//
// Checking the lexical resolution is not enough on its own: in "x/../..",
// x may itself be a symlink (say to "."), and the kernel applies ".." to
// where x leads. So ".." may only lead the target. Every symlink then climbs
// at most to the root from the real directory it lives in and only descends
// afterwards, and since parents of entries are always real directories that
// never change, no chain of symlinks can climb any further.
func (x *extractor) checkSymlink(entry, rel, target string) error {
	switch {
	case target == "":
		return &Error{Entry: entry, Reason: "empty symlink target"}
	case strings.IndexByte(target, 0) >= 0:
		return &Error{Entry: entry, Reason: "symlink target contains a NUL byte"}
	case len(target) > x.lim.MaxNameLen:
		return &Error{Entry: entry, Reason: fmt.Sprintf("symlink target is longer than %d bytes", x.lim.MaxNameLen)}
	case path.IsAbs(target):
		return &Error{Entry: entry, Reason: fmt.Sprintf("symlink target %q is absolute", target)}
	}
	named := false
	for c := range strings.SplitSeq(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named {
				return &Error{Entry: entry, Reason: fmt.Sprintf("symlink target %q has \"..\" after another component", target)}
			}
		default:
			named = true
		}
	}
	if escapes(path.Join(path.Dir(rel), target)) {
		return &Error{Entry: entry, Reason: fmt.Sprintf("symlink target %q points outside the context", target)}
	}
	return nil
}

// checkHardlink accepts only links to regular files this archive extracted,
// reached through real directories.
func (x *extractor) checkHardlink(entry, rel, target string) error {
	clean, reason := cleanPath(target, x.lim.MaxNameLen)
	if reason != "" {
		return &Error{Entry: entry, Reason: fmt.Sprintf("hardlink target %q: %s", target, reason)}
	}
	if clean == rel {
		return &Error{Entry: entry, Reason: "hardlink to itself"}
	}
	notFile := &Error{Entry: entry, Reason: fmt.Sprintf("hardlink target %q is not a previously extracted regular file", target)}
	if _, ok := x.dirs.find(path.Dir(clean)); !ok {
		return notFile
	}
	fi, err := x.root.Lstat(clean)
	if errors.Is(err, fs.ErrNotExist) {
		return notFile
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", clean, err)
	}
	if !fi.Mode().IsRegular() {
		return notFile
	}
	return nil
}

// mkdirParents makes sure every parent of rel is a real directory, creating
// missing ones, and returns the parent's node in x.dirs. A parent that is a
// symlink is rejected rather than followed.
func (x *extractor) mkdirParents(entry, rel string) (int, error) {
	dir := path.Dir(rel)
	if dir == "." {
		return 0, nil
	}
	id := 0
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		cur := dir[:i]
		base := path.Base(cur)
		if child, ok := x.dirs.lookup(id, base); ok {
			id = child
			continue
		}
		// Every component before cur is a known real directory, so Lstat
		// looks at exactly this one.
		fi, err := x.root.Lstat(cur)
		switch {
		case err == nil && fi.IsDir():
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			return 0, &Error{Entry: entry, Reason: fmt.Sprintf("parent %q is a symlink", cur)}
		case err == nil:
			return 0, &Error{Entry: entry, Reason: fmt.Sprintf("parent %q is not a directory", cur)}
		case errors.Is(err, fs.ErrNotExist):
			// Implied directories are not entries, but still cost memory
			// and syscalls, so bound them as well.
			x.implied++
			if x.implied > x.lim.MaxFiles {
				return 0, &Error{Entry: entry, Reason: fmt.Sprintf("archive implies more than %d directories", x.lim.MaxFiles), TooLarge: true}
			}
			if err := x.mkdir(entry, cur, 0o755); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("inspecting %s: %w", cur, err)
		}
		id = x.dirs.add(id, base)
	}
	return id, nil
}

func (x *extractor) mkdir(entry, rel string, mode fs.FileMode) error {
	if err := x.root.Mkdir(rel, mode); err != nil {
		return x.fsErr(entry, "creating directory", rel, err)
	}
	return x.setMode(rel, mode)
}

// setMode applies mode regardless of the umask, then the owner.
func (x *extractor) setMode(rel string, mode fs.FileMode) error {
	if err := x.root.Chmod(rel, mode); err != nil {
		return fmt.Errorf("setting mode of %s: %w", rel, err)
	}
	return x.lchown(rel)
}

func (x *extractor) lchown(rel string) error {
	if !x.opts.chown {
		return nil
	}
	if err := x.root.Lchown(rel, x.opts.uid, x.opts.gid); err != nil {
		return fmt.Errorf("changing owner of %s: %w", rel, err)
	}
	return nil
}

// fsErr turns errors that only hostile names cause into *Error.
func (x *extractor) fsErr(entry, op, rel string, err error) error {
	if errors.Is(err, syscall.ENAMETOOLONG) {
		return &Error{Entry: entry, Reason: "name too long"}
	}
	return fmt.Errorf("%s %s: %w", op, rel, err)
}

// removeExisting deletes a non-directory at rel so that the entry replacing
// it is created afresh instead of being written through a symlink or into a
// file that is hard-linked elsewhere.
func (x *extractor) removeExisting(entry, rel string) error {
	fi, err := x.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", rel, err)
	}
	if fi.IsDir() {
		return &Error{Entry: entry, Reason: "entry would replace a directory"}
	}
	if err := x.root.Remove(rel); err != nil {
		return fmt.Errorf("removing %s: %w", rel, err)
	}
	return nil
}

func (x *extractor) dir(hdr *tar.Header, rel string, parent int) error {
	// The sandbox user must be able to traverse and list every directory.
	mode := fs.FileMode(hdr.Mode)&0o777 | 0o755
	base := path.Base(rel)
	id, ok := x.dirs.lookup(parent, base)
	if ok {
		if err := x.setMode(rel, mode); err != nil {
			return err
		}
	} else {
		if err := x.removeExisting(hdr.Name, rel); err != nil {
			return err
		}
		if err := x.mkdir(hdr.Name, rel, mode); err != nil {
			return err
		}
		id = x.dirs.add(parent, base)
	}
	// Creating entries inside would change the mtime again; set it last.
	x.dirs.nodes[id].atime, x.dirs.nodes[id].mtime = accessTime(hdr), hdr.ModTime
	return nil
}

func (x *extractor) file(tr *tar.Reader, hdr *tar.Header, rel string) error {
	name := hdr.Name
	if hdr.Size < 0 {
		return &Error{Entry: name, Reason: "negative size"}
	}
	if hdr.Size > x.lim.MaxBytes-x.bytes {
		return &Error{Entry: name, Reason: fmt.Sprintf("archive content exceeds %d bytes", x.lim.MaxBytes), TooLarge: true}
	}
	if err := x.removeExisting(name, rel); err != nil {
		return err
	}
	// O_EXCL|O_NOFOLLOW: never open something that appeared in the meantime.
	f, err := x.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return x.fsErr(name, "creating", rel, err)
	}
	defer f.Close()

	src := &errRecorder{r: io.LimitReader(tr, hdr.Size)}
	n, err := io.CopyBuffer(writerOnly{f}, src, x.buf)
	if src.err != nil {
		return x.archiveErr(name, src.err)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	if n != hdr.Size {
		return x.archiveErr(name, io.ErrUnexpectedEOF)
	}
	x.bytes += n

	if x.opts.chown {
		if err := f.Chown(x.opts.uid, x.opts.gid); err != nil {
			return fmt.Errorf("changing owner of %s: %w", rel, err)
		}
	}
	// Keep the permission bits, drop setuid/setgid/sticky, and let the owner
	// always read and write. Chmod after Chown, which may clear bits.
	if err := f.Chmod(fs.FileMode(hdr.Mode)&0o777 | 0o600); err != nil {
		return fmt.Errorf("setting mode of %s: %w", rel, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	if !hdr.ModTime.IsZero() {
		if err := x.root.Chtimes(rel, accessTime(hdr), hdr.ModTime); err != nil {
			return fmt.Errorf("setting times of %s: %w", rel, err)
		}
	}
	return nil
}

func (x *extractor) symlink(hdr *tar.Header, rel string) error {
	if err := x.removeExisting(hdr.Name, rel); err != nil {
		return err
	}
	if err := x.root.Symlink(hdr.Linkname, rel); err != nil {
		return x.fsErr(hdr.Name, "creating symlink", rel, err)
	}
	return x.lchown(rel)
}

func (x *extractor) hardlink(hdr *tar.Header, rel string) error {
	target := path.Clean(hdr.Linkname) // validated by checkHardlink
	if err := x.removeExisting(hdr.Name, rel); err != nil {
		return err
	}
	// The inode already has the target's owner, mode and times.
	if err := x.root.Link(target, rel); err != nil {
		return x.fsErr(hdr.Name, "creating hardlink", rel, err)
	}
	return nil
}

// setDirTimes applies directory mtimes once nothing more is created inside.
func (x *extractor) setDirTimes() error {
	for id := 1; id < len(x.dirs.nodes); id++ {
		n := x.dirs.nodes[id]
		if n.mtime.IsZero() {
			continue
		}
		rel := x.dirs.path(id)
		if err := x.root.Chtimes(rel, n.atime, n.mtime); err != nil {
			return fmt.Errorf("setting times of %s: %w", rel, err)
		}
	}
	return nil
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// errRecorder tells read errors (the archive's fault) from write errors.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// dirTree records created directories as (parent, name) pairs rather than
// full paths, so memory grows with the names in the archive and not with
// their depth.
type dirTree struct {
	ids   map[dirKey]int
	nodes []dirNode // nodes[0] is the context directory
}

type dirKey struct {
	parent int
	name   string
}

type dirNode struct {
	parent       int
	name         string
	atime, mtime time.Time
}

func newDirTree() dirTree {
	return dirTree{ids: map[dirKey]int{}, nodes: []dirNode{{}}}
}

func (t *dirTree) lookup(parent int, name string) (int, bool) {
	id, ok := t.ids[dirKey{parent, name}]
	return id, ok
}

func (t *dirTree) add(parent int, name string) int {
	name = strings.Clone(name) // don't pin the whole header name
	id := len(t.nodes)
	t.nodes = append(t.nodes, dirNode{parent: parent, name: name})
	t.ids[dirKey{parent, name}] = id
	return id
}

// find looks up a cleaned relative directory path.
func (t *dirTree) find(rel string) (int, bool) {
	if rel == "." {
		return 0, true
	}
	id := 0
	for c := range strings.SplitSeq(rel, "/") {
		child, ok := t.lookup(id, c)
		if !ok {
			return 0, false
		}
		id = child
	}
	return id, true
}

func (t *dirTree) path(id int) string {
	var parts []string
	for ; id != 0; id = t.nodes[id].parent {
		parts = append(parts, t.nodes[id].name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

func addSat(a, b int64) int64 {
	if a > (1<<63-1)-b {
		return 1<<63 - 1
	}
	return a + b
}

func mulSat(a, b int64) int64 {
	if a != 0 && b > (1<<63-1)/a {
		return 1<<63 - 1
	}
	return a * b
}

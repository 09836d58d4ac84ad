package archive

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
	"unsafe"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
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
	// maxOpenDirs bounds the directory descriptors an extraction keeps.
	// Archives list a directory's entries together, so a few suffice.
	maxOpenDirs = 64
)

// extractor holds the state of one Extract call.
//
// Every change to the disk is a *at system call on a descriptor of a
// directory this extraction made (or the context directory itself), with a
// single path component and never following a symlink. That needs no path
// walk per entry, which is what creating files through os.Root costs: a
// few openat and close calls per level of every path.
type extractor struct {
	lim  Limits
	opts options
	src  *sourceReader

	// dirs records every directory created so far. Directories are never
	// removed or replaced, so a path found here is a real directory reached
	// through real directories only; this also spares re-checking every
	// parent of every entry.
	dirs dirTree
	// open lists the nodes of dirs holding a descriptor, oldest first
	// (never node 0, the context directory, whose descriptor Extract owns).
	open []int

	entries int // headers seen, against MaxFiles
	implied int // parent directories created without an entry
	files   int
	bytes   int64

	// buf carries file content to disk in large writes.
	buf []byte
}

// copyBufferSize is the size of an extractor's copy buffer.
const copyBufferSize = 256 << 10

func newExtractor(rootFD int, lim Limits, o options, src *sourceReader) *extractor {
	return &extractor{lim: lim, opts: o, src: src, dirs: newDirTree(rootFD), buf: make([]byte, copyBufferSize)}
}

// close releases the directory descriptors the extraction opened.
func (x *extractor) close() {
	for _, id := range x.open {
		unix.Close(x.dirs.nodes[id].fd)
		x.dirs.nodes[id].fd = -1
	}
	x.open = nil
}

// dirFD returns a descriptor of directory node id, opening it (and its
// parents) if needed. It stays valid until the next call: opening one may
// close the oldest.
func (x *extractor) dirFD(id int) (int, error) {
	if fd := x.dirs.nodes[id].fd; fd >= 0 {
		return fd, nil
	}
	pfd, err := x.dirFD(x.dirs.nodes[id].parent)
	if err != nil {
		return -1, err
	}
	fd, err := openat(pfd, x.dirs.nodes[id].name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening directory %s: %w", x.dirs.path(id), err)
	}
	x.dirs.nodes[id].fd = fd
	x.open = append(x.open, id)
	if len(x.open) > maxOpenDirs {
		old := x.open[0]
		x.open = x.open[1:]
		unix.Close(x.dirs.nodes[old].fd)
		x.dirs.nodes[old].fd = -1
	}
	return fd, nil
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
	pfd, err := x.dirFD(parent)
	if err != nil {
		return err
	}
	base := path.Base(rel)
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.dir(hdr, rel, parent, pfd, base)
	case tar.TypeSymlink:
		err = x.symlink(hdr, rel, pfd, base)
	case tar.TypeLink:
		err = x.hardlink(hdr, rel, pfd, base)
	default:
		err = x.file(tr, hdr, rel, pfd, base)
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
	id, ok := x.dirs.find(path.Dir(clean))
	if !ok {
		return notFile
	}
	fd, err := x.dirFD(id)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	err = fstatat(fd, path.Base(clean), &st)
	if errors.Is(err, unix.ENOENT) {
		return notFile
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", clean, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
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
		// Every component before cur is a known real directory, so this
		// looks at exactly this one.
		pfd, err := x.dirFD(id)
		if err != nil {
			return 0, err
		}
		// Implied directories are not entries, but still cost memory and
		// syscalls, so bound them as well.
		x.implied++
		if x.implied > x.lim.MaxFiles {
			return 0, &Error{Entry: entry, Reason: fmt.Sprintf("archive implies more than %d directories", x.lim.MaxFiles), TooLarge: true}
		}
		err = x.mkdir(entry, cur, pfd, base, 0o755)
		if errors.Is(err, unix.EEXIST) {
			var st unix.Stat_t
			if err := fstatat(pfd, base, &st); err != nil {
				return 0, fmt.Errorf("inspecting %s: %w", cur, err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				err = nil
			case unix.S_IFLNK:
				return 0, &Error{Entry: entry, Reason: fmt.Sprintf("parent %q is a symlink", cur)}
			default:
				return 0, &Error{Entry: entry, Reason: fmt.Sprintf("parent %q is not a directory", cur)}
			}
		}
		if err != nil {
			return 0, err
		}
		id = x.dirs.add(id, base)
	}
	return id, nil
}

// mkdir creates directory name in pfd with mode and the extraction's owner.
// An existing entry is returned as unix.EEXIST, unwrapped, for the caller to
// decide.
func (x *extractor) mkdir(entry, rel string, pfd int, name string, mode fs.FileMode) error {
	err := ignoringEINTR(func() error { return unix.Mkdirat(pfd, name, 0o700) })
	if err == unix.EEXIST {
		return err
	}
	if err != nil {
		return x.fsErr(entry, "creating directory", rel, err)
	}
	return x.setMode(rel, pfd, name, mode)
}

// setMode applies mode to directory name in pfd regardless of the umask,
// then the owner.
func (x *extractor) setMode(rel string, pfd int, name string, mode fs.FileMode) error {
	if err := ignoringEINTR(func() error { return unix.Fchmodat(pfd, name, uint32(mode.Perm()), 0) }); err != nil {
		return fmt.Errorf("setting mode of %s: %w", rel, err)
	}
	return x.lchown(rel, pfd, name)
}

func (x *extractor) lchown(rel string, pfd int, name string) error {
	if !x.opts.chown {
		return nil
	}
	if err := ignoringEINTR(func() error {
		return unix.Fchownat(pfd, name, x.opts.uid, x.opts.gid, unix.AT_SYMLINK_NOFOLLOW)
	}); err != nil {
		return fmt.Errorf("changing owner of %s: %w", rel, err)
	}
	return nil
}

// fsErr turns errors that only hostile names cause into *Error, and
// returns an *Error as it is.
func (x *extractor) fsErr(entry, op, rel string, err error) error {
	var ae *Error
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, unix.ENAMETOOLONG) {
		return &Error{Entry: entry, Reason: "name too long"}
	}
	return fmt.Errorf("%s %s: %w", op, rel, err)
}

// removeExisting deletes the non-directory name in pfd so that the entry
// replacing it is created afresh instead of being written through a symlink
// or into a file that is hard-linked elsewhere.
func (x *extractor) removeExisting(entry, rel string, pfd int, name string) error {
	var st unix.Stat_t
	err := fstatat(pfd, name, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return &Error{Entry: entry, Reason: "entry would replace a directory"}
	}
	if err := ignoringEINTR(func() error { return unix.Unlinkat(pfd, name, 0) }); err != nil {
		return fmt.Errorf("removing %s: %w", rel, err)
	}
	return nil
}

// replacing runs create, which makes name in pfd and fails with EEXIST if
// something is there; then it removes what was there and tries once more.
// Entries are rarely replaced, so this spares a stat per entry.
func (x *extractor) replacing(entry, rel string, pfd int, name string, create func() error) error {
	err := create()
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	if err := x.removeExisting(entry, rel, pfd, name); err != nil {
		return err
	}
	return create()
}

func (x *extractor) dir(hdr *tar.Header, rel string, parent, pfd int, name string) error {
	// The extraction's owner (the sandbox user, or the gateway's own) must
	// be able to fill and traverse every directory; group and other bits
	// stay as the context had them, as docker build keeps them.
	mode := fs.FileMode(hdr.Mode)&0o777 | 0o700
	id, ok := x.dirs.lookup(parent, name)
	if ok {
		if err := x.setMode(rel, pfd, name, mode); err != nil {
			return err
		}
	} else {
		if err := x.replacing(hdr.Name, rel, pfd, name, func() error {
			return x.mkdir(hdr.Name, rel, pfd, name, mode)
		}); err != nil {
			return err
		}
		id = x.dirs.add(parent, name)
	}
	// Creating entries inside would change the mtime again; set it last.
	x.dirs.nodes[id].atime, x.dirs.nodes[id].mtime = accessTime(hdr), hdr.ModTime
	return nil
}

func (x *extractor) file(tr *tar.Reader, hdr *tar.Header, rel string, pfd int, name string) error {
	if hdr.Size < 0 {
		return &Error{Entry: hdr.Name, Reason: "negative size"}
	}
	if hdr.Size > x.lim.MaxBytes-x.bytes {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("archive content exceeds %d bytes", x.lim.MaxBytes), TooLarge: true}
	}
	// O_EXCL|O_NOFOLLOW: never open something that appeared in the meantime.
	fd := -1
	err := x.replacing(hdr.Name, rel, pfd, name, func() error {
		var err error
		fd, err = openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return x.fsErr(hdr.Name, "creating", rel, err)
	}
	f := fdFile(fd)
	defer f.close()

	src := &errRecorder{r: io.LimitReader(tr, hdr.Size)}
	n, err := copyFull(f, src, x.buf)
	if src.err != nil {
		return x.archiveErr(hdr.Name, src.err)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	if n != hdr.Size {
		return x.archiveErr(hdr.Name, io.ErrUnexpectedEOF)
	}
	x.bytes += n

	if x.opts.chown {
		if err := ignoringEINTR(func() error { return unix.Fchown(fd, x.opts.uid, x.opts.gid) }); err != nil {
			return fmt.Errorf("changing owner of %s: %w", rel, err)
		}
	}
	// Keep the permission bits, drop setuid/setgid/sticky, and let the owner
	// always read and write. Chmod after Chown, which may clear bits.
	if err := ignoringEINTR(func() error { return unix.Fchmod(fd, uint32(hdr.Mode&0o777|0o600)) }); err != nil {
		return fmt.Errorf("setting mode of %s: %w", rel, err)
	}
	if !hdr.ModTime.IsZero() {
		ts := [2]unix.Timespec{timespec(accessTime(hdr)), timespec(hdr.ModTime)}
		if err := futimens(fd, &ts); err != nil {
			return fmt.Errorf("setting times of %s: %w", rel, err)
		}
	}
	if err := f.close(); err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	return nil
}

func (x *extractor) symlink(hdr *tar.Header, rel string, pfd int, name string) error {
	if err := x.replacing(hdr.Name, rel, pfd, name, func() error {
		return ignoringEINTR(func() error { return unix.Symlinkat(hdr.Linkname, pfd, name) })
	}); err != nil {
		return x.fsErr(hdr.Name, "creating symlink", rel, err)
	}
	return x.lchown(rel, pfd, name)
}

func (x *extractor) hardlink(hdr *tar.Header, rel string, pfd int, name string) error {
	target := path.Clean(hdr.Linkname) // validated by checkHardlink
	id, _ := x.dirs.find(path.Dir(target))
	// Looking up the target's directory may close pfd: keep a copy.
	pfd, err := unix.FcntlInt(uintptr(pfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("creating hardlink %s: %w", rel, err)
	}
	defer unix.Close(pfd)
	tfd, err := x.dirFD(id)
	if err != nil {
		return err
	}
	// The inode already has the target's owner, mode and times. Without
	// AT_SYMLINK_FOLLOW, linkat never follows a symlink.
	if err := x.replacing(hdr.Name, rel, pfd, name, func() error {
		return ignoringEINTR(func() error { return unix.Linkat(tfd, path.Base(target), pfd, name, 0) })
	}); err != nil {
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
		pfd, err := x.dirFD(n.parent)
		if err != nil {
			return err
		}
		ts := []unix.Timespec{timespec(n.atime), timespec(n.mtime)}
		if err := ignoringEINTR(func() error {
			return unix.UtimesNanoAt(pfd, n.name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}); err != nil {
			return fmt.Errorf("setting times of %s: %w", x.dirs.path(id), err)
		}
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// futimens sets the times of an open file: utimensat with a NULL path,
// which x/sys/unix has no wrapper for.
func futimens(fd int, ts *[2]unix.Timespec) error {
	return ignoringEINTR(func() error {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	})
}

func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	return ignoringEINTR(func() error { return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// fdFile writes to a file descriptor with plain write calls; an os.File
// would cost extra fcntl calls per file.
type fdFile int

func (f fdFile) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(f), p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// close is safe to call twice: the deferred call after an explicit one
// does nothing.
func (f *fdFile) close() error {
	if *f < 0 {
		return nil
	}
	err := unix.Close(int(*f))
	*f = -1
	return err
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// copyFull copies src to dst in writes of len(buf) bytes but the last:
// an upload's reads return what has arrived, often a few KiB, and one
// write system call per few KiB costs more than the rest of extracting.
func copyFull(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := io.ReadFull(src, buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			// The end, or src's own error, which the caller gets from
			// its errRecorder; a short entry shows in n.
			return n, nil
		case err != nil:
			return n, err
		}
	}
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
	fd           int // an open descriptor, or -1
	atime, mtime time.Time
}

// newDirTree returns a tree whose root, the context directory, is open as
// rootFD.
func newDirTree(rootFD int) dirTree {
	return dirTree{ids: map[dirKey]int{}, nodes: []dirNode{{fd: rootFD}}}
}

func (t *dirTree) lookup(parent int, name string) (int, bool) {
	id, ok := t.ids[dirKey{parent, name}]
	return id, ok
}

func (t *dirTree) add(parent int, name string) int {
	name = strings.Clone(name) // don't pin the whole header name
	id := len(t.nodes)
	t.nodes = append(t.nodes, dirNode{parent: parent, name: name, fd: -1})
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

package kaniko

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
)

// MinSubordinateIDs is the fewest subordinate uids and gids the sandbox
// user should have. Inside the sandbox, ids 1 and up map to the first
// range of the user in /etc/subuid and /etc/subgid (unshare --map-auto);
// a base image owning a file by an id beyond that range cannot be
// unpacked ("chown /opt: invalid argument"). Base images made on hosts
// with directory users own files by ids far above 65536 (the usual
// range), so scripts/setup gives the sandbox user every id from its range
// start up to 2^31, which is at least this many.
const MinSubordinateIDs = 1 << 30

// sandboxUser is the user sandboxes run as: the configured one for a root
// gateway, else the gateway's own.
func (r *Runner) sandboxUser() (name string, uid int, err error) {
	if r.cred != nil {
		return r.o.user, int(r.cred.Uid), nil
	}
	u, err := user.Current()
	if err != nil {
		return "", os.Getuid(), fmt.Errorf("looking up the gateway's user: %w", err)
	}
	return u.Username, os.Getuid(), nil
}

// subIDCount returns the size of the first range of file that belongs to
// the user called name or numbered uid (the one unshare --map-auto maps),
// or 0 if there is none.
func subIDCount(file, name string, uid int) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", file, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(uid)) {
			continue
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return 0, fmt.Errorf("%s: bad range for %s: %q", file, f[0], sc.Text())
		}
		return n, nil
	}
	return 0, nil
}

// CheckIDRanges returns an error naming the sandbox user's subordinate id
// ranges if either is smaller than MinSubordinateIDs. Builds still run
// with a smaller range; those whose base images own files by higher ids
// fail. The gateway warns about it at start-up.
func (r *Runner) CheckIDRanges() error {
	desc, small, err := r.idRanges()
	if err != nil {
		return err
	}
	if small {
		return fmt.Errorf("%s, fewer than the %d needed to unpack base images whose files are owned by high ids; give it a range of at least that size (scripts/setup does)", desc, MinSubordinateIDs)
	}
	return nil
}

// idRanges describes the sandbox user's ranges, and reports whether one
// is smaller than MinSubordinateIDs.
func (r *Runner) idRanges() (desc string, small bool, err error) {
	name, uid, err := r.sandboxUser()
	if err != nil {
		return "", false, err
	}
	var parts []string
	for _, f := range []struct{ file, what string }{{r.o.subUID, "uids"}, {r.o.subGID, "gids"}} {
		n, err := subIDCount(f.file, name, uid)
		if err != nil {
			return "", false, err
		}
		small = small || n < MinSubordinateIDs
		parts = append(parts, fmt.Sprintf("%d subordinate %s (%s)", n, f.what, f.file))
	}
	return fmt.Sprintf("sandbox user %s has %s", name, strings.Join(parts, " and ")), small, nil
}

// idRangeError is the error of a build that kaniko failed because a file
// it unpacked is owned by an id the sandbox does not map.
func (r *Runner) idRangeError(code int) error {
	desc, _, err := r.idRanges()
	if err != nil {
		desc = err.Error()
	}
	return fmt.Errorf("kaniko failed (exit status %d): a file is owned by a uid or gid outside the sandbox's id range (chown: invalid argument): %s; give it at least %d of each (scripts/setup does); see the build log", code, desc, MinSubordinateIDs)
}

// chownHint watches the build log for kaniko failing to give a file its
// owner because the id is not mapped in the sandbox. A build step can
// print the same line: that only changes the wording of its own error.
type chownHint struct {
	mu   sync.Mutex
	line []byte
	seen bool
}

// chownSuffix ends the line chownHint looks for.
var chownSuffix = []byte(": invalid argument")

func (h *chownHint) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		// A line can match only if it holds the suffix: the lines before
		// the next one that does are skipped at memchr speed, not looked
		// at one by one (a build can print millions).
		if len(h.line) == 0 {
			j := bytes.Index(p, chownSuffix)
			if j < 0 {
				j = len(p)
			}
			p = p[bytes.LastIndexByte(p[:j], '\n')+1:]
		}
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		// Only a line's first KiB is looked at: the message is short.
		if room := 1024 - len(h.line); room > 0 {
			h.line = append(h.line, chunk[:min(room, len(chunk))]...)
		}
		if i < 0 {
			break
		}
		if bytes.Contains(h.line, []byte("chown ")) && bytes.HasSuffix(bytes.TrimSpace(h.line), chownSuffix) {
			h.seen = true
		}
		h.line = h.line[:0]
		p = p[i+1:]
	}
	return n, nil
}

// Seen reports whether such a line was written.
func (h *chownHint) Seen() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen
}

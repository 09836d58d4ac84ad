package policy

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// maxNameLen bounds a repository name with its host: go-containerregistry
// allows 255 characters of path after a host. Longer input is refused
// before any matching work.
const maxNameLen = 512

// dockerHub is the registry that go-containerregistry gives Docker Hub
// references; "docker.io" in a policy is an alias for it.
const dockerHub = "index.docker.io"

var (
	// placeholderRE is a plain attribute name, as JWT claims are named.
	placeholderRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// componentRE is one path component of a repository as the
	// distribution spec defines it. go-containerregistry accepts any mix
	// of [a-z0-9._-/], including "..", so this is checked here: a
	// destination like reg/group/proj/../../other must never match
	// group/proj/**, because a proxy in front of the registry may clean
	// the path.
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	// tagRE is a tag as the distribution spec defines it.
	tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// registryRE is host[:port] (brackets for IPv6), loose on purpose:
	// it only keeps "/", "*" and placeholders out of a registry literal.
	registryRE = regexp.MustCompile(`^[A-Za-z0-9.\-\[\]:]+$`)
)

// pieceKind says what a piece of a parsed pattern is.
type pieceKind int

const (
	pieceLit   pieceKind = iota // literal text
	pieceAttr                   // {attr}: an identity attribute's value, always literal
	pieceStar                   // *: any text within one path segment
	pieceDStar                  // **: any number of whole segments, including none
)

type piece struct {
	kind pieceKind
	text string // the literal, or the attribute name
}

// repoPattern is a destination repository pattern as parsed from the
// policy, before an identity's attributes are filled in.
//
// Matching is done by hand on typed pieces, not by building a regexp or a
// glob string, so that nothing in an attribute value can ever be read as
// pattern syntax.
type repoPattern struct {
	src  string
	segs [][]piece // one entry per "/"-separated segment; segs[0] is the registry
}

// parseRepoPattern parses host[:port]/seg/seg... where a segment is "*",
// "**", or literal text mixed with {attr} placeholders and "*".
func parseRepoPattern(s string) (repoPattern, error) {
	p := repoPattern{src: s}
	if s == "" {
		return p, errors.New("empty pattern")
	}
	if len(s) > maxNameLen {
		return p, fmt.Errorf("pattern is longer than %d characters", maxNameLen)
	}
	parts := strings.Split(s, "/")
	for i, seg := range parts {
		switch {
		case seg == "":
			return p, fmt.Errorf("%q has an empty path segment", s)
		case seg == "**":
			p.segs = append(p.segs, []piece{{kind: pieceDStar}})
			continue
		case seg == "*":
			p.segs = append(p.segs, []piece{{kind: pieceStar}})
			continue
		case i == 0:
			// The registry is a literal host[:port] or a whole-segment
			// wildcard: a partial glob or a placeholder in a host name
			// would be too easy to get wrong (*.example.com matching
			// evil-example.com's look-alikes, attribute-chosen hosts).
			if !registryRE.MatchString(seg) {
				return p, fmt.Errorf("%q: registry %q must be host[:port], \"*\" or \"**\"", s, seg)
			}
			host := strings.ToLower(seg)
			if host == "docker.io" {
				host = dockerHub
			}
			p.segs = append(p.segs, []piece{{kind: pieceLit, text: host}})
			continue
		}
		pieces, err := parseSegment(seg)
		if err != nil {
			return p, fmt.Errorf("%q: %w", s, err)
		}
		p.segs = append(p.segs, pieces)
	}
	if len(p.segs) < 2 && p.segs[0][0].kind != pieceDStar {
		return p, fmt.Errorf("%q names no repository: want host/path", s)
	}
	return p, nil
}

// parseSegment parses one repository path segment other than the registry.
func parseSegment(seg string) ([]piece, error) {
	if seg == "." || seg == ".." {
		return nil, fmt.Errorf("path segment %q is not allowed", seg)
	}
	var out []piece
	lit := func(s string) {
		if n := len(out); n > 0 && out[n-1].kind == pieceLit {
			out[n-1].text += s
			return
		}
		out = append(out, piece{kind: pieceLit, text: s})
	}
	for i := 0; i < len(seg); {
		c := seg[i]
		switch {
		case c == '{':
			end := strings.IndexByte(seg[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed placeholder in %q", seg)
			}
			attr := seg[i+1 : i+end]
			if !placeholderRE.MatchString(attr) {
				return nil, fmt.Errorf("placeholder {%s} is not a plain attribute name", attr)
			}
			out = append(out, piece{kind: pieceAttr, text: attr})
			i += end + 1
		case c == '*':
			if i+1 < len(seg) && seg[i+1] == '*' {
				return nil, fmt.Errorf("\"**\" must be a whole path segment, not part of %q", seg)
			}
			out = append(out, piece{kind: pieceStar})
			i++
		case c == '}':
			return nil, fmt.Errorf("unmatched \"}\" in %q", seg)
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
			lit(string(c))
			i++
		default:
			return nil, fmt.Errorf("%q holds %q, which cannot be part of a repository name (they are lowercase)", seg, c)
		}
	}
	return out, nil
}

// attrs reports the attribute names the pattern refers to.
func (p repoPattern) attrs() []string {
	var names []string
	for _, seg := range p.segs {
		for _, pc := range seg {
			if pc.kind == pieceAttr {
				names = append(names, pc.text)
			}
		}
	}
	return names
}

// boundRepo is a repoPattern with an identity's attributes filled in: only
// literals and wildcards remain, split into segments.
type boundRepo struct {
	segs [][]piece // pieces are pieceLit, pieceStar or a lone pieceDStar
}

// bind fills in the placeholders from attrs. A missing, empty or
// malformed attribute makes the pattern unusable for this identity: an
// error, never an empty string, so that reg/{project_path} cannot turn into
// reg/ and then into something broader. An attribute value is a sequence
// of valid repository path components (GitLab's project_path holds "/");
// anything else ("..", "*", uppercase, spaces) is refused rather than
// escaped, as it could not name a valid repository anyway.
func (p repoPattern) bind(attrs map[string]string) (boundRepo, error) {
	var b boundRepo
	var cur []piece
	addLit := func(s string) {
		if s == "" {
			return
		}
		if n := len(cur); n > 0 && cur[n-1].kind == pieceLit {
			cur[n-1].text += s
			return
		}
		cur = append(cur, piece{kind: pieceLit, text: s})
	}
	for _, seg := range p.segs {
		cur = nil
		for _, pc := range seg {
			switch pc.kind {
			case pieceAttr:
				v, ok := attrValue(attrs, pc.text)
				if !ok || v == "" {
					return boundRepo{}, fmt.Errorf("the identity has no attribute %q", pc.text)
				}
				if err := checkRepoValue(v); err != nil {
					return boundRepo{}, fmt.Errorf("attribute %q: %w", pc.text, err)
				}
				comps := strings.Split(v, "/")
				for j, c := range comps {
					if j > 0 {
						// A "/" in the value closes the current segment.
						b.segs = append(b.segs, cur)
						cur = nil
					}
					addLit(c)
				}
			case pieceLit:
				addLit(pc.text)
			default:
				cur = append(cur, pc)
			}
		}
		b.segs = append(b.segs, cur)
	}
	return b, nil
}

// checkRepoValue accepts "/"-separated valid repository path components.
func checkRepoValue(v string) error {
	if len(v) > 255 {
		return errors.New("value is too long for a repository path")
	}
	for _, c := range strings.Split(v, "/") {
		if !componentRE.MatchString(c) {
			return fmt.Errorf("value %q is not a valid repository path (component %q)", v, c)
		}
	}
	return nil
}

// validRepository reports whether repo (host/path, as name.Repository.Name
// gives it) has only valid path components after the host.
func validRepository(repo string) bool {
	host, rest, ok := strings.Cut(repo, "/")
	if !ok || host == "" {
		return false
	}
	for _, c := range strings.Split(rest, "/") {
		if !componentRE.MatchString(c) {
			return false
		}
	}
	return true
}

// match reports whether repo (host/path) matches. A repository with an
// empty, "." or ".." segment never matches, whatever the pattern.
func (b boundRepo) match(repo string) bool {
	if len(repo) > maxNameLen || !validRepository(repo) {
		return false
	}
	segs := strings.Split(repo, "/")
	// next[j] is whether b.segs[i+1:] matches segs[j:], cur[j] the same
	// for b.segs[i:]. Bottom-up in O(len*len) time and O(len) memory: no
	// backtracking blow-up however many "**" a pattern has.
	m, n := len(b.segs), len(segs)
	next, cur := make([]bool, n+1), make([]bool, n+1)
	next[n] = true
	for i := m - 1; i >= 0; i-- {
		dstar := len(b.segs[i]) == 1 && b.segs[i][0].kind == pieceDStar
		for j := n; j >= 0; j-- {
			if dstar {
				cur[j] = next[j] || (j < n && cur[j+1])
				continue
			}
			cur[j] = j < n && next[j+1] && matchSegment(b.segs[i], segs[j])
		}
		next, cur = cur, next
	}
	return next[0]
}

// matchSegment matches one segment made of literals and "*" (which never
// crosses a "/": s holds none). For star-only globs, taking each middle
// literal at its leftmost position is exact, so there is no backtracking.
func matchSegment(pieces []piece, s string) bool {
	// Split into literals separated by stars: lits[0] * lits[1] * ... .
	lits := []string{""}
	for _, pc := range pieces {
		if pc.kind == pieceStar {
			lits = append(lits, "")
			continue
		}
		lits[len(lits)-1] += pc.text
	}
	if len(lits) == 1 {
		return s == lits[0]
	}
	first, last := lits[0], lits[len(lits)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, l := range lits[1 : len(lits)-1] {
		k := strings.Index(s, l)
		if k < 0 {
			return false
		}
		s = s[k+len(l):]
	}
	return true
}

// literalPrefix is the text of the pattern before its first placeholder or
// wildcard (after docker.io normalization): every repository it matches
// starts with it.
func (p repoPattern) literalPrefix() string {
	var sb strings.Builder
	for i, seg := range p.segs {
		if i > 0 {
			sb.WriteByte('/')
		}
		for _, pc := range seg {
			if pc.kind != pieceLit {
				return sb.String()
			}
			sb.WriteString(pc.text)
		}
	}
	return sb.String()
}

// tagPattern is a path.Match glob over tags, with {attr} placeholders.
type tagPattern struct {
	src    string
	pieces []piece // pieceLit (glob syntax, kept as written) and pieceAttr
}

func parseTagPattern(s string, placeholders bool) (tagPattern, error) {
	t := tagPattern{src: s}
	if s == "" {
		return t, errors.New("empty tag pattern")
	}
	var check strings.Builder // s with every placeholder as a plain letter
	for i := 0; i < len(s); {
		switch s[i] {
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return t, fmt.Errorf("unclosed placeholder in %q", s)
			}
			attr := s[i+1 : i+end]
			if !placeholderRE.MatchString(attr) {
				return t, fmt.Errorf("placeholder {%s} in %q is not a plain attribute name", attr, s)
			}
			if !placeholders {
				return t, fmt.Errorf("%q: placeholders are not allowed here", s)
			}
			t.pieces = append(t.pieces, piece{kind: pieceAttr, text: attr})
			check.WriteByte('x')
			i += end + 1
		case '}':
			return t, fmt.Errorf("unmatched \"}\" in %q", s)
		default:
			j := i
			for j < len(s) && s[j] != '{' && s[j] != '}' {
				j++
			}
			t.pieces = append(t.pieces, piece{kind: pieceLit, text: s[i:j]})
			check.WriteString(s[i:j])
			i = j
		}
	}
	if _, err := path.Match(check.String(), ""); err != nil {
		return t, fmt.Errorf("%q is not a valid glob: %w", s, err)
	}
	return t, nil
}

// bind returns the glob with attribute values filled in as escaped
// literals. Values must be valid tags, so there is nothing to escape in
// practice; escaping anyway keeps a future relaxation of that check from
// turning values into glob syntax.
func (t tagPattern) bind(attrs map[string]string) (string, error) {
	var sb strings.Builder
	for _, pc := range t.pieces {
		if pc.kind == pieceLit {
			sb.WriteString(pc.text)
			continue
		}
		v, ok := attrValue(attrs, pc.text)
		if !ok || v == "" {
			return "", fmt.Errorf("the identity has no attribute %q", pc.text)
		}
		if !tagRE.MatchString(v) {
			return "", fmt.Errorf("attribute %q: value %q is not a valid tag", pc.text, v)
		}
		for _, r := range v {
			if strings.ContainsRune(`*?[]\`, r) {
				sb.WriteByte('\\')
			}
			sb.WriteRune(r)
		}
	}
	return sb.String(), nil
}

// globMatch is path.Match that fails closed on a malformed pattern.
func globMatch(pattern, s string) bool {
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

package policy

import (
	"path"
	"strings"
	"testing"
)

func TestRepoPatternMatch(t *testing.T) {
	attrs := map[string]string{"p": "group/app", "t": "infra", "odd": "a.b_c-d"}
	tests := []struct {
		pattern string
		repo    string
		want    bool
	}{
		{"r.io/aa/bb", "r.io/aa/bb", true},
		{"r.io/aa/bb", "r.io/aa/bbb", false},
		{"r.io/aa/bb", "r.io/aa", false},
		{"r.io/aa/bb", "q.io/aa/bb", false},
		{"r.io/aa/*", "r.io/aa/bb", true},
		{"r.io/aa/*", "r.io/aa", false},
		{"r.io/aa/*", "r.io/aa/bb/cc", false},
		{"r.io/aa/**", "r.io/aa", true},
		{"r.io/aa/**", "r.io/aa/bb/cc/dd", true},
		{"r.io/aa/**", "r.io/aab", false},
		{"r.io/**/cc", "r.io/cc", true},
		{"r.io/**/cc", "r.io/aa/bb/cc", true},
		{"r.io/**/cc", "r.io/aa/bb/cd", false},
		{"r.io/**/**/cc", "r.io/aa/cc", true},
		{"r.io/app-*", "r.io/app-web", true},
		{"r.io/app-*", "r.io/web-app", false},
		{"r.io/*-app-*", "r.io/x-app-y", true},
		{"r.io/*-app-*", "r.io/x-ap-y", false},
		{"r.io/a*b*c", "r.io/abc", true},
		{"r.io/a*b*c", "r.io/aXbYc", false}, // uppercase: not a valid repository
		{"r.io/a*b*c", "r.io/axbyc", true},
		{"r.io/a*b*c", "r.io/acb", false},
		{"r.io/ab*ba", "r.io/aba", false}, // prefix and suffix must not overlap
		{"*/aa", "any.host:5000/aa", true},
		{"**", "r.io/aa/bb", true},
		{"docker.io/library/aa", "index.docker.io/library/aa", true},
		{"Docker.IO/library/aa", "index.docker.io/library/aa", true},
		{"r.io/{p}", "r.io/group/app", true},
		{"r.io/{p}", "r.io/group/app/x", false},
		{"r.io/{p}", "r.io/group", false},
		{"r.io/{p}/*", "r.io/group/app/cache", true},
		{"r.io/{p}/*", "r.io/group/app", false},
		{"r.io/{p}/**", "r.io/group/app", true},
		{"r.io/pre-{p}-post", "r.io/pre-group/app-post", true},
		{"r.io/pre-{p}-post", "r.io/pre-group/app", false},
		{"r.io/teams/{t}/*", "r.io/teams/infra/web", true},
		{"r.io/teams/{t}/*", "r.io/teams/infra2/web", false},
		{"r.io/{odd}", "r.io/a.b_c-d", true},
		{"r.io/{t}{t}", "r.io/infrainfra", true},
		// Repositories with invalid components never match.
		{"r.io/**", "r.io/aa/../bb", false},
		{"r.io/**", "r.io/aa//bb", false},
		{"r.io/**", "r.io/./aa", false},
		{"r.io/**", "r.io/aa/", false},
		{"r.io/*", "r.io/-aa", false},
		{"**", "/aa", false},
	}
	for _, tt := range tests {
		p, err := parseRepoPattern(tt.pattern)
		if err != nil {
			t.Errorf("parseRepoPattern(%q) = %v", tt.pattern, err)
			continue
		}
		b, err := p.bind(attrs)
		if err != nil {
			t.Errorf("bind(%q) = %v", tt.pattern, err)
			continue
		}
		if got := b.match(tt.repo); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.repo, got, tt.want)
		}
	}
}

func TestRepoPatternBind(t *testing.T) {
	p, err := parseRepoPattern("r.io/{p}/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", "..", "../x", "a/../b", "a//b", "/a", "a/", ".", "./a", "*", "**", "a/*", "A/b", "a b", "a\x00b", "{p}", "a?", "[a]", "a\\b", strings.Repeat("a", 256)} {
		if _, err := p.bind(map[string]string{"p": v}); err == nil {
			t.Errorf("bind(p=%q) = nil error, want the pattern to be unusable", v)
		}
	}
	if _, err := p.bind(nil); err == nil || !strings.Contains(err.Error(), `no attribute "p"`) {
		t.Errorf("bind(no attributes) = %v, want a missing-attribute error", err)
	}
}

func TestTagPattern(t *testing.T) {
	attrs := map[string]string{"ref": "feature-x", "bad": "a*", "slash": "a/b"}
	tests := []struct {
		pattern, tag string
		want         bool
		unusable     bool
	}{
		{"*", "anything", true, false},
		{"dev-*", "dev-1", true, false},
		{"dev-*", "prod-1", false, false},
		{"{ref}", "feature-x", true, false},
		{"{ref}", "feature-y", false, false},
		{"pr-{ref}-*", "pr-feature-x-3", true, false},
		{"{bad}", "a*", false, true},
		{"{bad}", "aXYZ", false, true},
		{"{slash}", "a/b", false, true},
		{"{missing}", "", false, true},
		{"v[0-9]*", "v1.2", true, false},
		{"v[0-9]*", "vx", false, false},
	}
	for _, tt := range tests {
		tp, err := parseTagPattern(tt.pattern, true)
		if err != nil {
			t.Errorf("parseTagPattern(%q) = %v", tt.pattern, err)
			continue
		}
		g, err := tp.bind(attrs)
		if (err != nil) != tt.unusable {
			t.Errorf("bind(%q) = %q, %v, want unusable=%v", tt.pattern, g, err, tt.unusable)
			continue
		}
		if err == nil && globMatch(g, tt.tag) != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.tag, !tt.want, tt.want)
		}
	}
}

// FuzzMatch checks properties of destination patterns that must hold for
// any pattern, attribute value and repository: no panics; an accepted
// attribute value is a valid repository path; whatever matches starts
// with the pattern's literal prefix and is a valid repository; and a
// pattern without wildcards matches exactly its literal expansion, so
// that attribute values can never act as wildcards or path syntax.
func FuzzMatch(f *testing.F) {
	f.Add("registry.example.com/{project_path}", "group/app", "registry.example.com/group/app")
	f.Add("registry.example.com/{project_path}/*", "../../other", "registry.example.com/other/x")
	f.Add("registry.example.com/{project_path}", "*", "registry.example.com/x")
	f.Add("registry.example.com/{project_path}/**", "**", "registry.example.com/a/b/c")
	f.Add("r.io/**/x", "", "r.io/a/b/x")
	f.Add("r.io/a*b*c", "v", "r.io/aabbcc")
	f.Fuzz(func(t *testing.T, pattern, value, repo string) {
		p, err := parseRepoPattern(pattern)
		if err != nil {
			return
		}
		b, err := p.bind(map[string]string{"project_path": value, "a": value})
		if err != nil {
			return
		}
		uses := len(p.attrs()) > 0
		if uses && checkRepoValue(value) != nil {
			t.Fatalf("bind accepted value %q, which is not a valid repository path", value)
		}
		got := b.match(repo)
		if !uses && !strings.Contains(pattern, "**") {
			// Without placeholders and "**", path.Match is an oracle: the
			// remaining characters are not special to it.
			var sb strings.Builder
			for i, seg := range p.segs {
				if i > 0 {
					sb.WriteByte('/')
				}
				for _, pc := range seg {
					if pc.kind == pieceStar {
						sb.WriteByte('*')
						continue
					}
					for _, r := range pc.text {
						if strings.ContainsRune(`*?[]\`, r) {
							sb.WriteByte('\\')
						}
						sb.WriteRune(r)
					}
				}
			}
			want, err := path.Match(sb.String(), repo)
			if err != nil {
				t.Fatalf("path.Match(%q) = %v", sb.String(), err)
			}
			if want = want && validRepository(repo); got != want {
				t.Fatalf("match(%q, %q) = %v, path.Match says %v", pattern, repo, got, want)
			}
		}
		if !got {
			return
		}
		if !validRepository(repo) {
			t.Fatalf("%q matched invalid repository %q", pattern, repo)
		}
		if prefix := p.literalPrefix(); !strings.HasPrefix(repo, prefix) {
			t.Fatalf("%q (value %q) matched %q, which lacks the literal prefix %q", pattern, value, repo, prefix)
		}
		if !strings.Contains(pattern, "*") {
			var sb strings.Builder
			for i, seg := range p.segs {
				if i > 0 {
					sb.WriteByte('/')
				}
				for _, pc := range seg {
					if pc.kind == pieceAttr {
						sb.WriteString(value)
					} else {
						sb.WriteString(pc.text)
					}
				}
			}
			if repo != sb.String() {
				t.Fatalf("%q (value %q) matched %q, want only %q", pattern, value, repo, sb.String())
			}
		}
	})
}

package policy

import "strings"

// Derived placeholders: {NAME_lc} is the attribute NAME in lowercase and
// {NAME_slug} is it as GitLab slugs a ref (CI_COMMIT_REF_SLUG), so that a
// policy can name what GitLab's predefined variables hold:
// $CI_REGISTRY_IMAGE has the project path in lowercase ({project_path_lc}),
// $CI_COMMIT_REF_SLUG is {ref_slug}.
const (
	suffixLower = "_lc"
	suffixSlug  = "_slug"
	// maxSlugLen is GitLab's bound on a slug, in bytes (it is ASCII).
	maxSlugLen = 63
)

// attrValue is the value of placeholder name for attrs: the attribute of
// that name if the identity has one, else a value derived by a _lc or
// _slug suffix from the attribute before it. An attribute literally named
// ref_slug (a token attribute, say) wins, so that no existing policy
// changes meaning.
func attrValue(attrs map[string]string, name string) (string, bool) {
	if v, ok := attrs[name]; ok {
		return v, true
	}
	if base, ok := strings.CutSuffix(name, suffixLower); ok && base != "" {
		v, ok := attrs[base]
		return strings.ToLower(v), ok
	}
	if base, ok := strings.CutSuffix(name, suffixSlug); ok && base != "" {
		v, ok := attrs[base]
		return slug(v), ok
	}
	return "", false
}

// slug is GitLab's slug of a ref name (Gitlab::Utils.slugify, documented
// for CI_COMMIT_REF_SLUG): lowercase, every character other than a-z and
// 0-9 replaced by "-" (one "-" per character: runs are not merged),
// shortened to 63 bytes, then no leading or trailing "-".
func slug(s string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
		if sb.Len() == maxSlugLen {
			break
		}
	}
	return strings.Trim(sb.String(), "-")
}

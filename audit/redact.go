package audit

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// Redacted replaces every secret in a line.
const Redacted = "[REDACTED]"

// minSecretLen is the shortest secret redacted. Shorter strings match too
// much ordinary text (a build arg "1" would shred every line) and are not
// credentials anyway.
const minSecretLen = 4

// redactFreeText redacts secrets from the free-text fields of r: the
// reason and the error, which quote what went wrong and may quote a
// command line or a registry's answer. Everything else in a Record is
// structure (identity, claims, destinations, base images, rule names) and
// is written as it is: redacting it because a build arg happened to hold
// the same text would let the audited job scrub its own identity.
func redactFreeText(r *Record, secrets []string) {
	secrets = normalizeSecrets(secrets)
	if len(secrets) == 0 {
		return
	}
	r.Reason, _ = redactString(r.Reason, secrets)
	r.Error, _ = redactString(r.Error, secrets)
}

// normalizeSecrets drops secrets too short to redact and duplicates. For a
// secret that is not valid UTF-8 it adds the form encoding/json would
// give it (invalid bytes as U+FFFD), in case the text was decoded from
// JSON on its way here.
func normalizeSecrets(secrets []string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= minSecretLen && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, s := range secrets {
		add(s)
		if !utf8.ValidString(s) {
			add(strings.ToValidUTF8(s, "\uFFFD"))
		}
	}
	return out
}

// redactString replaces every occurrence of a secret in s by Redacted and
// reports whether there was any. Occurrences that overlap or touch,
// whether of one secret ("aaaa" in "aaaaa") or of two, become a single
// Redacted: replacing one secret at a time could cut another secret in
// half and leave the rest of it readable.
func redactString(s string, secrets []string) (string, bool) {
	type span struct{ start, end int }
	var spans []span
	for _, secret := range secrets {
		for off := 0; ; {
			j := strings.Index(s[off:], secret)
			if j < 0 {
				break
			}
			start := off + j
			spans = append(spans, span{start, start + len(secret)})
			off = start + 1
		}
	}
	if len(spans) == 0 {
		return s, false
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	var b strings.Builder
	last := 0 // end of what has been copied or redacted
	for k := 0; k < len(spans); {
		start, end := spans[k].start, spans[k].end
		for k++; k < len(spans) && spans[k].start <= end; k++ {
			end = max(end, spans[k].end)
		}
		b.WriteString(s[last:start])
		b.WriteString(Redacted)
		last = end
	}
	b.WriteString(s[last:])
	return b.String(), true
}

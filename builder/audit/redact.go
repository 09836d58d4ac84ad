package audit

import (
	"bytes"
	"encoding/json"
	"errors"
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

// redact replaces every occurrence of a secret in the strings of line, a
// JSON text as marshal makes it, by Redacted.
//
// It works on the decoded strings, not on the raw bytes, for two reasons:
// a secret with characters JSON escapes ('"', '\\', control characters)
// appears escaped in the line and would be missed by a byte search; and a
// byte search could match across a string's delimiters and corrupt the
// line. Object keys are strings too and are redacted like values: claim
// names come from outside.
func redact(line []byte, secrets []string) ([]byte, error) {
	secrets = normalizeSecrets(secrets)
	if len(secrets) == 0 {
		return line, nil
	}
	out := make([]byte, 0, len(line))
	for i := 0; i < len(line); {
		if line[i] != '"' {
			out = append(out, line[i])
			i++
			continue
		}
		// Find the closing quote; a backslash escapes the next byte, and
		// no escape sequence contains a quote other than \".
		end, escaped := i+1, false
		for end < len(line) && line[end] != '"' {
			if line[end] == '\\' {
				escaped = true
				end++
			}
			end++
		}
		if end >= len(line) {
			return nil, errors.New("unterminated string")
		}
		lit := line[i : end+1]
		i = end + 1

		var s string
		if escaped {
			if err := json.Unmarshal(lit, &s); err != nil {
				return nil, err
			}
		} else {
			// Without escapes the literal's bytes are the string.
			s = string(lit[1 : len(lit)-1])
		}
		r, ok := redactString(s, secrets)
		if !ok {
			out = append(out, lit...)
			continue
		}
		enc, err := encodeString(r)
		if err != nil {
			return nil, err
		}
		out = append(out, enc...)
	}
	return out, nil
}

// normalizeSecrets drops secrets too short to redact and duplicates. For a
// secret that is not valid UTF-8 it adds the form in which it appears in a
// line: encoding/json replaces invalid bytes by U+FFFD, so the raw secret
// never matches while most of it is still there.
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

// encodeString encodes s as marshal would.
func encodeString(s string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

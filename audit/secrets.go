package audit

import (
	"math"
	"slices"
	"strings"
	"unicode"
)

// secretNameParts mark a build arg as secret by its name: NPM_TOKEN,
// DB_PASSWORD, AWS_SECRET_ACCESS_KEY, GIT_CREDENTIALS, BASIC_AUTH.
func secretNameParts() []string {
	return []string{"TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH"}
}

// SecretBuildArgValues returns the values of the build args that are
// plausibly secret, for Logger.Log to redact from free text:
//   - those named in marked (the spec's secret_build_args);
//   - those whose name holds TOKEN, SECRET, PASSWORD, PASSWD, KEY,
//     CREDENTIAL or AUTH, in any case;
//   - those whose value looks random: at least 16 characters without
//     white space, mixing upper and lower case letters and digits as
//     generated tokens do, with at least 3 bits of entropy per character.
//
// Other values (a project path, a flavour, an image reference) are not
// secrets, and redacting them would only blank out ordinary text.
func SecretBuildArgValues(args map[string]string, marked []string) []string {
	var out []string
	for k, v := range args {
		if slices.Contains(marked, k) || secretName(k) || looksRandom(v) {
			out = append(out, v)
		}
	}
	return out
}

func secretName(k string) bool {
	k = strings.ToUpper(k)
	return slices.ContainsFunc(secretNameParts(), func(p string) bool { return strings.Contains(k, p) })
}

// looksRandom reports whether v has the shape of a generated credential:
// upper and lower case letters and digits, switching between them often
// (in at least 40% of adjacent pairs; camel-case words such as
// Release2024Candidate switch in about 20%), with at least 3 bits of
// entropy per character.
func looksRandom(v string) bool {
	if len(v) < 16 {
		return false
	}
	class := func(r rune) int {
		switch {
		case unicode.IsUpper(r):
			return 1
		case unicode.IsLower(r):
			return 2
		case unicode.IsDigit(r):
			return 3
		}
		return 0
	}
	var seen [4]bool
	counts := map[rune]int{}
	n, switches, prev := 0, 0, -1
	for _, r := range v {
		if unicode.IsSpace(r) {
			return false
		}
		c := class(r)
		seen[c] = true
		if prev >= 0 && c != prev {
			switches++
		}
		prev = c
		counts[r]++
		n++
	}
	if !seen[1] || !seen[2] || !seen[3] || float64(switches) < 0.4*float64(n-1) {
		return false
	}
	var bits float64
	for _, c := range counts {
		p := float64(c) / float64(n)
		bits -= p * math.Log2(p)
	}
	return bits >= 3
}

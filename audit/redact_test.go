package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth"
)

// strs returns every string in the JSON value v, keys included.
func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, strs(e)...)
		}
		return out
	case map[string]any:
		var out []string
		for k, e := range v {
			out = append(out, k)
			out = append(out, strs(e)...)
		}
		return out
	}
	return nil
}

func TestLogRedacts(t *testing.T) {
	const token = "glpat-0123456789abcdef"
	when := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name      string
		rec       Record
		perRecord []string // passed to Log
		known     []string // returned by WithSecrets
		// hidden must not appear in the line, raw or in any decoded string.
		hidden []string
		// want are decoded strings the line must still hold.
		want []string
	}{{
		name:      "per record in error",
		rec:       Record{Event: EventBuild, Error: "push to reg failed: auth " + token + " rejected"},
		perRecord: []string{token},
		hidden:    []string{token},
		want:      []string{"push to reg failed: auth [REDACTED] rejected"},
	}, {
		name:   "known in error",
		rec:    Record{Event: EventBuild, Error: "token=" + token},
		known:  []string{token},
		hidden: []string{token},
		want:   []string{"token=[REDACTED]"},
	}, {
		// Structure is never redacted: not even a known secret in a
		// claim (claims are signed by the issuer or set by the admin).
		name: "known in identity attributes",
		rec: Record{Event: EventAuthz, Identity: &auth.Identity{
			Name: "ci", Kind: auth.KindToken,
			Attributes: map[string]string{"team": "infra", "oops": "Bearer " + token},
		}},
		known: []string{token},
		want:  []string{"ci", "infra", "Bearer " + token},
	}, {
		name: "per record in attribute name",
		rec: Record{Event: EventAuthz, Identity: &auth.Identity{
			Name: "ci", Kind: auth.KindOIDC, Attributes: map[string]string{"x-" + token: "1"},
		}},
		perRecord: []string{token},
		want:      []string{"x-" + token},
	}, {
		name:      "free text only",
		rec:       Record{Event: EventBuild, Reason: token, Error: "at " + token, Destinations: []string{"reg/" + token + ":1"}, Digest: token + token},
		perRecord: []string{token},
		want:      []string{"[REDACTED]", "at [REDACTED]", "reg/" + token + ":1", token + token},
	}, {
		// A secret with characters JSON escapes is found in the decoded
		// string although the line holds it escaped.
		name:      "escaped characters",
		rec:       Record{Event: EventBuild, Error: `pass "p\a<s>&s` + "\t\x01" + `" end`},
		perRecord: []string{`p\a<s>&s` + "\t\x01"},
		hidden:    []string{`p\a<s>&s` + "\t\x01", `p\\a`},
		want:      []string{`pass "[REDACTED]" end`},
	}, {
		name:   "unicode",
		rec:    Record{Event: EventBuild, Error: "mot de passe: pâté-ñ-秘密"},
		known:  []string{"pâté-ñ-秘密"},
		hidden: []string{"pâté-ñ-秘密"},
		want:   []string{"mot de passe: [REDACTED]"},
	}, {
		// encoding/json turns invalid bytes into U+FFFD: the rest of
		// the secret is still redacted.
		name:      "invalid UTF-8",
		rec:       Record{Event: EventBuild, Error: "key \xffsecretvalue"},
		perRecord: []string{"\xffsecretvalue"},
		hidden:    []string{"secretvalue"},
		want:      []string{"key [REDACTED]"},
	}, {
		// Redacting one secret must not leave the tail of another that
		// overlaps it.
		name:      "overlapping secrets",
		rec:       Record{Event: EventBuild, Error: "a-abcdXXefgh-b"},
		perRecord: []string{"abcdXX"},
		known:     []string{"XXefgh"},
		hidden:    []string{"abcdXX", "XXefgh", "efgh"},
		want:      []string{"a-[REDACTED]-b"},
	}, {
		name:      "secret containing another",
		rec:       Record{Event: EventBuild, Error: "x hunter2hunter2 y"},
		perRecord: []string{"hunter2", "hunter2hunter2"},
		hidden:    []string{"hunter2"},
		want:      []string{"x [REDACTED] y"},
	}, {
		// A secret matching across a string's end and the next key must
		// not corrupt the line.
		name:      "across delimiters",
		rec:       Record{Event: EventBuild, JobID: `a\`, Runner: "kaniko"},
		perRecord: []string{`","runner`, `\","`},
		want:      []string{`a\`, "kaniko"},
	}, {
		// Short secrets would shred ordinary text; they are not redacted.
		name:      "too short",
		rec:       Record{Event: EventBuild, Status: "failed", Error: "exit 1"},
		perRecord: []string{"1", "fai", ""},
		want:      []string{"failed", "exit 1"},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			opts := []Option{WithWriter(&buf)}
			if tt.known != nil {
				opts = append(opts, WithSecrets(func() []string { return tt.known }))
			}
			l, err := New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			tt.rec.Time = when
			if err := l.Log(tt.rec, tt.perRecord...); err != nil {
				t.Fatalf("Log(%v) = %v, want nil", tt.rec, err)
			}
			line := buf.String()
			if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("Log(%v) = %q, want one line", tt.rec, line)
			}
			var v any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("Log(%v) = %s, not JSON: %v", tt.rec, line, err)
			}
			got := strs(v)
			for _, h := range tt.hidden {
				if strings.Contains(line, h) {
					t.Errorf("Log(%v) = %s, holds %q", tt.rec, line, h)
				}
				for _, s := range got {
					if strings.Contains(s, h) {
						t.Errorf("Log(%v) = %s, holds %q in %q", tt.rec, line, h, s)
					}
				}
			}
			for _, w := range tt.want {
				found := false
				for _, s := range got {
					found = found || s == w
				}
				if !found {
					t.Errorf("Log(%v) = %s, want the string %q", tt.rec, line, w)
				}
			}
		})
	}
}

// TestWithSecretsIsCalledPerLine checks that secrets learnt after New are
// redacted, and that the function may be called concurrently.
func TestWithSecretsIsCalledPerLine(t *testing.T) {
	var (
		mu     sync.Mutex
		known  []string
		buf    bytes.Buffer
		bufMu  sync.Mutex
		writer = writerFunc(func(p []byte) (int, error) {
			bufMu.Lock()
			defer bufMu.Unlock()
			return buf.Write(p)
		})
	)
	l, err := New(WithWriter(writer), WithSecrets(func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), known...)
	}))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	known = append(known, "late-secret")
	mu.Unlock()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := Record{Event: EventAuthn, Reason: "bad token late-secret"}
			if err := l.Log(rec); err != nil {
				t.Errorf("Log(%v) = %v, want nil", rec, err)
			}
		}()
	}
	wg.Wait()
	if got := buf.String(); strings.Contains(got, "late-secret") || strings.Count(got, Redacted) != 10 {
		t.Errorf("Log() wrote %s, want 10 lines with the secret redacted", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestRedactString(t *testing.T) {
	for _, tt := range []struct {
		s       string
		secrets []string
		want    string
	}{
		{"nothing here", []string{"secret"}, "nothing here"},
		{"secret", []string{"secret"}, "[REDACTED]"},
		{"a secret b secret", []string{"secret"}, "a [REDACTED] b [REDACTED]"},
		{"aaaaa", []string{"aaaa"}, "[REDACTED]"},
		{"abcdXXefgh", []string{"XXefgh", "abcdXX"}, "[REDACTED]"},
		{"abcdefgh", []string{"abcd", "efgh"}, "[REDACTED]"},
		{"abcd-efgh", []string{"abcd", "efgh"}, "[REDACTED]-[REDACTED]"},
	} {
		if got, _ := redactString(tt.s, tt.secrets); got != tt.want {
			t.Errorf("redactString(%q, %q) = %q, want %q", tt.s, tt.secrets, got, tt.want)
		}
	}
}

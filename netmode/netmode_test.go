package netmode

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
		ok   bool
	}{
		{"none", None, true},
		{"egress", Egress, true},
		{"", "", false},
		{"host", "", false},
		{"bridge", "", false},
		{"None", "", false},
		{"egress ", "", false},
	} {
		got, err := Parse(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("Parse(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if cerr := Mode(tc.in).Check(); (cerr == nil) != tc.ok {
			t.Errorf("Mode(%q).Check() = %v, want ok %v", tc.in, cerr, tc.ok)
		}
	}
}

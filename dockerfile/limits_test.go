package dockerfile

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
)

// manyStages is a Dockerfile of n named stages, each built on the one
// before and copying from the first: every name lookup has many names to
// search.
func manyStages(n int) []byte {
	var b strings.Builder
	b.WriteString("FROM registry.example.com/base:1 AS s0\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "FROM s%d AS s%d\nCOPY --from=s0 /a /a\n", i-1, i)
	}
	return []byte(b.String())
}

// BenchmarkAnalyzeStages: the Dockerfile is the caller's, and is
// analyzed by the gateway itself when the build is accepted, so its cost
// must grow linearly with the stages (a lookup of stage names by scanning
// them all made it quadratic: twenty times the stages cost 83–109 times
// the CPU). Compare the ns/op of the two sizes; figures in
// bench/README.md.
func BenchmarkAnalyzeStages(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		src := manyStages(n)
		if len(src) > MaxBytes {
			b.Fatalf("%d stages are %d bytes, more than Read allows", n, len(src))
		}
		b.Run(fmt.Sprintf("stages=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Analyze(src, nil, ""); err != nil {
					b.Fatalf("Analyze(%d stages) = %v", n, err)
				}
			}
		})
	}
}

// TestAnalyzeExpansionBounded: each ARG doubling the one before makes
// 2^n bytes from n short lines; a word naming one ARG many times
// multiplies it again. Both are refused, quickly and without the memory.
func TestAnalyzeExpansionBounded(t *testing.T) {
	var doubling strings.Builder
	doubling.WriteString("ARG A0=aaaaaaaaaaaaaaaa\n")
	for i := 1; i <= 64; i++ {
		fmt.Fprintf(&doubling, "ARG A%d=${A%d}${A%d}\n", i, i-1, i-1)
	}
	doubling.WriteString("FROM registry.example.com/base:1\n")

	var repeated strings.Builder
	// BuildKit's parser refuses lines of 64 KiB or more.
	repeated.WriteString("ARG A=" + strings.Repeat("a", 60000) + "\n")
	repeated.WriteString("ARG B=" + strings.Repeat("$A", 30000) + "\n")
	repeated.WriteString("FROM registry.example.com/base:1\n")

	for _, tc := range []struct {
		name, src, err string
	}{
		{"doubling ARGs", doubling.String(), "line 17: ARG A16: ARG substitution makes more than 1048576 bytes"},
		{"one ARG many times", repeated.String(), "line 2: ARG B: ARG substitution makes more than 1048576 bytes"},
		{"many references in FROM", "ARG A=" + strings.Repeat("a", 60000) + "\nFROM registry.example.com/" + strings.Repeat("${A}", 15000) + "\n",
			"FROM on line 2: \"registry.example.com/${A}${A}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Analyze([]byte(tc.src), nil, "")
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Analyze(%s) = %v, want error containing %q", tc.name, err, tc.err)
			}
			if err != nil && len(err.Error()) > 1024 {
				t.Errorf("Analyze(%s): error of %d bytes, want the Dockerfile's words cut short", tc.name, len(err.Error()))
			}
			if d := time.Since(start); d > testenv.Scale(10*time.Second) {
				t.Errorf("Analyze(%s) took %v", tc.name, d)
			}
		})
	}
}

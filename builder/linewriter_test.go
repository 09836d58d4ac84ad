package builder

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// recordingWriter records each Write it gets.
type recordingWriter struct {
	writes []string
	err    error
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestLineWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		// want is what reaches the log before Flush, then after.
		want, flushed []string
	}{{
		name:   "whole lines pass at once",
		writes: []string{"one\n", "two\n"},
		want:   []string{"one\n", "two\n"},
	}, {
		name:   "a line split across writes passes whole",
		writes: []string{"par", "tial ", "line\n"},
		want:   []string{"partial line\n"},
	}, {
		name:   "several lines in one write pass in one",
		writes: []string{"a\nb\nc"},
		want:   []string{"a\nb\n"},
		// The unterminated rest waits for its newline or Flush.
		flushed: []string{"a\nb\n", "c"},
	}, {
		name:    "a line begun earlier is completed, then the whole lines pass",
		writes:  []string{"par", "tial\nb\nc\nd"},
		want:    []string{"partial\n", "b\nc\n"},
		flushed: []string{"partial\n", "b\nc\n", "d"},
	}, {
		name:    "trailing text without newline is held until Flush",
		writes:  []string{"no newline"},
		want:    nil,
		flushed: []string{"no newline"},
	}, {
		name:   "empty lines",
		writes: []string{"\n\n"},
		want:   []string{"\n\n"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := &recordingWriter{}
			lw := NewLineWriter(w)
			for _, s := range tc.writes {
				if n, err := lw.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			if !slices.Equal(w.writes, tc.want) {
				t.Errorf("after %q: log got writes %q, want %q", tc.writes, w.writes, tc.want)
			}
			lw.Flush()
			flushed := tc.flushed
			if flushed == nil {
				flushed = tc.want
			}
			if !slices.Equal(w.writes, flushed) {
				t.Errorf("after %q and Flush: log got writes %q, want %q", tc.writes, w.writes, flushed)
			}
		})
	}
}

func TestLineWriterLogError(t *testing.T) {
	errLog := errors.New("log full")
	lw := NewLineWriter(&recordingWriter{err: errLog})
	// A failing log must be reported, so the copy from the sandbox stops
	// instead of silently dropping the build's output.
	if _, err := lw.Write([]byte("line\n")); !errors.Is(err, errLog) {
		t.Errorf("Write to a failing log: err = %v, want %v", err, errLog)
	}
}

func TestLineWriterLongLine(t *testing.T) {
	// A line longer than the buffer still arrives whole and in order.
	var buf bytes.Buffer
	lw := NewLineWriter(&buf)
	long := strings.Repeat("x", 200<<10) + "\n"
	if _, err := lw.Write([]byte(long + "next\n")); err != nil {
		t.Fatal(err)
	}
	lw.Flush()
	if got, want := buf.String(), long+"next\n"; got != want {
		t.Errorf("log got %d bytes, want %d", len(got), len(want))
	}
}

// A build flooding its log with short lines costs a write of the log per
// write it makes, not one per line: a 2 GB flood of 50-byte lines would
// otherwise be 40 million writes through the log's lock.
func TestLineWriterFloodBatches(t *testing.T) {
	w := &recordingWriter{}
	lw := NewLineWriter(w)
	chunk := strings.Repeat("flooding the log with one line after another\n", 700) // ~32 KiB, a pipe read
	for range 10 {
		if _, err := lw.Write([]byte(chunk + "half a li")); err != nil {
			t.Fatal(err)
		}
		if _, err := lw.Write([]byte("ne\n")); err != nil {
			t.Fatal(err)
		}
	}
	lw.Flush()
	if got, want := strings.Join(w.writes, ""), strings.Repeat(chunk+"half a line\n", 10); got != want {
		t.Fatalf("log got %d bytes, want %d in order", len(got), len(want))
	}
	if len(w.writes) > 20 {
		t.Errorf("20 writes of 7010 lines reached the log as %d writes, want at most 20", len(w.writes))
	}
	for i, s := range w.writes {
		if !strings.HasSuffix(s, "\n") {
			t.Errorf("write %d to the log ends mid-line: ...%q", i, s[max(0, len(s)-20):])
		}
	}
}

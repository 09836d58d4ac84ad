package dind

import (
	"bytes"
	"io"
	"regexp"
)

// vertexDigest is a line the 20.10 CLI's plain progress prints under
// every step's name: the step's digest in BuildKit's graph, noise in a
// build log. A step's own output never matches: its lines carry a time
// ("#5 0.416 ...").
var vertexDigest = regexp.MustCompile(`^#[0-9]+ sha256:[0-9a-f]{64}\r?$`)

// stepDigests passes on what it is written but the vertexDigest lines.
// It is written whole lines (builder.LineWriter), but for the last.
type stepDigests struct{ w io.Writer }

func (s stepDigests) Write(p []byte) (int, error) {
	n := len(p)
	if !bytes.Contains(p, []byte(" sha256:")) {
		_, err := s.w.Write(p)
		return n, err
	}
	out := make([]byte, 0, len(p))
	for line := range bytes.SplitAfterSeq(p, []byte("\n")) {
		if !vertexDigest.Match(bytes.TrimSuffix(line, []byte("\n"))) {
			out = append(out, line...)
		}
	}
	if len(out) == 0 {
		return n, nil
	}
	_, err := s.w.Write(out)
	return n, err
}

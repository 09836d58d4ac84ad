package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
)

func testLog(t *testing.T) *Log {
	t.Helper()
	l, err := newLog(filepath.Join(t.TempDir(), "job.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// syncBuffer is a bytes.Buffer safe for a follower writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogConcurrentWriterAndFollowers(t *testing.T) {
	l := testLog(t)
	const lines = 2000
	var want strings.Builder
	for i := range lines {
		fmt.Fprintf(&want, "line %05d %s\n", i, strings.Repeat("x", i%97))
	}

	const followers = 4
	outs := make([]*syncBuffer, followers)
	errs := make(chan error, followers)
	for i := range followers {
		outs[i] = &syncBuffer{}
		go func() { errs <- l.WriteTo(context.Background(), outs[i], 0, true) }()
	}
	// Write in odd-sized pieces so that followers see partial lines too.
	go func() {
		s := want.String()
		for len(s) > 0 {
			n := min(len(s), 1+len(s)%1013)
			if _, err := l.Write([]byte(s[:n])); err != nil {
				t.Errorf("Write = %v, want nil", err)
				return
			}
			s = s[n:]
		}
		l.Close()
	}()
	for range followers {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("WriteTo(follow) = %v, want nil", err)
			}
		case <-time.After(testenv.Scale(20 * time.Second)):
			t.Fatal("WriteTo(follow) did not return after Close")
		}
	}
	for i, o := range outs {
		if got := o.String(); got != want.String() {
			t.Errorf("follower %d read %d bytes, want %d identical bytes", i, len(got), want.Len())
		}
	}
}

func TestLogFollowEndsAtClose(t *testing.T) {
	l := testLog(t)
	l.Printf("hello %s", "world")
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- l.WriteTo(context.Background(), out, 0, true) }()

	// Once the follower has read all there is, it waits for more: it
	// reads a line written after that, rather than ending.
	waitRead := func(suffix string) {
		t.Helper()
		for deadline := time.Now().Add(testenv.Scale(5 * time.Second)); !strings.HasSuffix(out.String(), suffix); {
			select {
			case err := <-done:
				t.Fatalf("WriteTo(follow) returned %v before Close, having read %q, want it to wait", err, out.String())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("WriteTo(follow) read %q, want it to end in %q", out.String(), suffix)
			}
		}
	}
	waitRead("hello world\n")
	l.Write([]byte("last line\n"))
	waitRead("last line\n")
	select {
	case err := <-done:
		t.Fatalf("WriteTo(follow) returned %v before Close, want it to wait", err)
	default:
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WriteTo(follow) = %v, want nil", err)
		}
	case <-time.After(testenv.Scale(5 * time.Second)):
		t.Fatal("WriteTo(follow) did not return after Close")
	}
	if got, want := out.String(), "#buildgw hello world\nlast line\n"; got != want {
		t.Errorf("WriteTo(follow) wrote %q, want %q", got, want)
	}
	// Closing twice is harmless, writing after Close is refused.
	if err := l.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if _, err := l.Write([]byte("late")); err == nil {
		t.Errorf("Write after Close = nil error, want an error")
	}
	// A follower that starts after Close reads everything and returns.
	var after bytes.Buffer
	if err := l.WriteTo(context.Background(), &after, 0, true); err != nil || after.String() != "#buildgw hello world\nlast line\n" {
		t.Errorf("WriteTo(follow) after Close = %q, %v, want the whole log, nil", after.String(), err)
	}
}

func TestLogOffset(t *testing.T) {
	l := testLog(t)
	l.Write([]byte("0123456789"))
	tests := []struct {
		offset int64
		want   string
	}{
		{0, "0123456789"},
		{3, "3456789"},
		{9, "9"},
		{10, ""},
		{25, ""},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if err := l.WriteTo(context.Background(), &b, tc.offset, false); err != nil {
			t.Fatalf("WriteTo(offset %d) = %v, want nil", tc.offset, err)
		}
		if b.String() != tc.want {
			t.Errorf("WriteTo(offset %d) wrote %q, want %q", tc.offset, b.String(), tc.want)
		}
	}

	// Following from an offset only returns what comes after it.
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- l.WriteTo(context.Background(), out, 10, true) }()
	l.Write([]byte("abc"))
	l.Close()
	if err := <-done; err != nil || out.String() != "abc" {
		t.Errorf("WriteTo(offset 10, follow) = %q, %v, want %q, nil", out.String(), err, "abc")
	}
}

func TestLogFollowCancel(t *testing.T) {
	l := testLog(t)
	l.Write([]byte("started\n"))
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- l.WriteTo(ctx, out, 0, true) }()
	// Cancelled while following: once what is there has been written.
	for deadline := time.Now().Add(testenv.Scale(5 * time.Second)); out.String() == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("WriteTo(follow) wrote nothing of the log")
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("WriteTo(cancelled ctx) = %v, want %v", err, context.Canceled)
		}
	case <-time.After(testenv.Scale(5 * time.Second)):
		t.Fatal("WriteTo(follow) did not return after its context was cancelled")
	}
	if got := out.String(); got != "started\n" {
		t.Errorf("WriteTo(cancelled ctx) wrote %q, want %q", got, "started\n")
	}
}

// failWriter fails after the first write, like a client that went away.
// It closes first at that write.
type failWriter struct {
	n     int
	first chan struct{}
}

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	if f.n > 1 {
		return 0, errors.New("broken pipe")
	}
	close(f.first)
	return len(p), nil
}

func TestLogFollowWriterError(t *testing.T) {
	l := testLog(t)
	l.Write([]byte("one\n"))
	done := make(chan error, 1)
	fw := &failWriter{first: make(chan struct{})}
	go func() { done <- l.WriteTo(context.Background(), fw, 0, true) }()
	// The next line comes once the first is out, so that it is a write of its own.
	select {
	case <-fw.first:
	case <-time.After(testenv.Scale(5 * time.Second)):
		t.Fatal("WriteTo(follow) never wrote the first line")
	}
	l.Write([]byte("two\n"))
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "broken pipe") {
			t.Errorf("WriteTo(failing writer) = %v, want the writer's error", err)
		}
	case <-time.After(testenv.Scale(5 * time.Second)):
		t.Fatal("WriteTo(follow) kept going after its writer failed")
	}
}

// TestLogCap: a log flooded far past its cap keeps its head and its
// tail, whole lines of it, with one line in between naming how many bytes
// were dropped; a follower that started at an offset before the flood
// reads exactly what is stored; and the disk it takes stays within the
// cap while it is written.
func TestLogCap(t *testing.T) {
	const capBytes = 64 << 10
	dir := t.TempDir()
	path := filepath.Join(dir, "job.log")
	l, err := newLog(path, capBytes)
	if err != nil {
		t.Fatal(err)
	}
	var follower syncBuffer
	followed := make(chan error, 1)
	go func() { followed <- l.WriteTo(context.Background(), &follower, 5, true) }()

	var all strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&all, "line %06d %s\n", i, strings.Repeat("y", i%13))
	}
	in := all.String()
	for p := in; len(p) > 0; {
		n := min(len(p), 1+len(p)%7919)
		if _, err := l.Write([]byte(p[:n])); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
		if got := l.Stored(); got > capBytes {
			t.Fatalf("Stored() while writing = %d, want at most %d", got, capBytes)
		}
		if n := du(t, dir); n > 2*capBytes {
			t.Fatalf("log directory takes %d bytes on disk while writing, want at most about %d", n, capBytes)
		}
	}
	l.Printf("failed: the end")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + tailSuffix); !os.IsNotExist(err) {
		t.Errorf("ring file after Close: stat = %v, want it gone", err)
	}
	if len(got) > capBytes+200 {
		t.Errorf("stored log = %d bytes, want at most the cap %d and one line", len(got), capBytes)
	}
	head, rest, ok := strings.Cut(string(got), "#buildgw log_max_bytes: ")
	if !ok {
		t.Fatalf("stored log has no dropped-bytes line; it ends %q", got[max(0, len(got)-200):])
	}
	if !strings.HasPrefix(in, strings.TrimSuffix(head, "\n")) || len(head) < capBytes/2-100 {
		t.Errorf("stored log's head (%d bytes) is not the start of what was written", len(head))
	}
	line, tail, _ := strings.Cut(rest, "\n")
	var dropped int
	if _, err := fmt.Sscanf(line, "%d bytes of output dropped", &dropped); err != nil {
		t.Fatalf("dropped-bytes line %q: %v", line, err)
	}
	written := len(in) + len("#buildgw failed: the end\n")
	if kept := len(strings.TrimSuffix(head, "\n")) + dropped + len(tail); kept != written {
		t.Errorf("head %d + dropped %d + tail %d = %d, want the %d bytes written", len(head), dropped, len(tail), kept, written)
	}
	if !strings.HasSuffix(in+"#buildgw failed: the end\n", tail) || !strings.HasPrefix(tail, "line ") || len(tail) < capBytes/2-100 {
		t.Errorf("stored log's tail (%d bytes) is not the end of what was written, from a line's start: %q...", len(tail), tail[:min(40, len(tail))])
	}
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
	if f := follower.String(); f != string(got[5:]) {
		t.Errorf("follower from offset 5 read %d bytes, want the %d stored after it", len(f), len(got)-5)
	}
}

// du is the disk dir's files take, in bytes.
func du(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, e.Name()), &st); err == nil {
			n += st.Blocks * 512
		}
	}
	return n
}

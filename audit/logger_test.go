package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/auth"
)

// readLines returns the lines of the file at path, failing the test on any
// line that is not a complete JSON Record.
func readLines(t *testing.T, path string) []Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseLines(t, path, b)
}

func parseLines(t *testing.T, name string, b []byte) []Record {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("%s does not end with a newline: %q", name, b)
	}
	var recs []Record
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var r Record
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s line %d %q: %v", name, i+1, abbrev(line), err)
		}
		if dec.More() {
			t.Fatalf("%s line %d %q holds more than one value", name, i+1, abbrev(line))
		}
		recs = append(recs, r)
	}
	return recs
}

// abbrev keeps failure messages about long lines readable.
func abbrev(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func TestNewOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for _, tt := range []struct {
		name    string
		opts    []Option
		wantErr bool
	}{
		{"file", []Option{WithFile(path)}, false},
		{"writer", []Option{WithWriter(&bytes.Buffer{})}, false},
		{"both", []Option{WithFile(path), WithWriter(&bytes.Buffer{}), WithWriter(&bytes.Buffer{})}, false},
		{"rotation", []Option{WithFile(path), WithMaxSize(1 << 20), WithMaxBackups(3)}, false},
		{"secrets", []Option{WithWriter(&bytes.Buffer{}), WithSecrets(func() []string { return nil })}, false},
		{"no destination", nil, true},
		{"empty path", []Option{WithFile("")}, true},
		{"nil writer", []Option{WithWriter(nil)}, true},
		{"zero max size", []Option{WithFile(path), WithMaxSize(0)}, true},
		{"zero backups", []Option{WithFile(path), WithMaxSize(10), WithMaxBackups(0)}, true},
		{"rotation without file", []Option{WithWriter(&bytes.Buffer{}), WithMaxSize(10)}, true},
		{"nil secrets", []Option{WithWriter(&bytes.Buffer{}), WithSecrets(nil)}, true},
		{"missing directory", []Option{WithFile(filepath.Join(path, "nope", "audit.log"))}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.opts...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New() = %v, want error %v", err, tt.wantErr)
			}
			if l != nil {
				if err := l.Close(); err != nil {
					t.Errorf("Close() = %v", err)
				}
			}
		})
	}
}

func TestLogLine(t *testing.T) {
	when := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		rec  Record
		want string
	}{{
		name: "authz",
		rec: Record{
			Time:      when,
			Event:     EventAuthz,
			RequestID: "r1",
			Identity: &auth.Identity{
				Name: "gitlab/project_path:group/app", Kind: auth.KindOIDC, Issuer: "https://gitlab.example",
				Attributes: map[string]string{"ref": "main", "project_path": "group/app"},
			},
			SourceIP: "10.0.0.1",
			Action:   "build.submit",
			Decision: DecisionAllow,
			Rule:     "main-branch",
		},
		want: `{"time":"2025-05-01T12:00:00Z","event":"authz","request_id":"r1",` +
			`"identity":{"name":"gitlab/project_path:group/app","kind":"oidc","issuer":"https://gitlab.example",` +
			`"attributes":{"project_path":"group/app","ref":"main"}},"source_ip":"10.0.0.1",` +
			`"action":"build.submit","decision":"allow","rule":"main-branch"}` + "\n",
	}, {
		name: "build",
		rec: Record{
			Time: when, Event: EventBuild, JobID: "j1", ContextSHA256: "abc", Dockerfile: "build/Dockerfile",
			Destinations: []string{"reg/app:1"}, BuildArgNames: []string{"A", "B"}, Runner: "kaniko",
			Status: "succeeded", Digest: "sha256:def", QueuedSeconds: 0.5, BuildSeconds: 10, PushSeconds: 2, TotalSeconds: 12.5,
		},
		want: `{"time":"2025-05-01T12:00:00Z","event":"build","job_id":"j1","context_sha256":"abc",` +
			`"dockerfile":"build/Dockerfile","destinations":["reg/app:1"],"build_arg_names":["A","B"],` +
			`"runner":"kaniko","status":"succeeded","digest":"sha256:def","queued_seconds":0.5,` +
			`"build_seconds":10,"push_seconds":2,"total_seconds":12.5}` + "\n",
	}, {
		// Newlines in strings stay escaped: one record, one line.
		name: "multi-line error",
		rec:  Record{Time: when, Event: EventBuild, Error: "step 3:\nexit <1> & more\n"},
		want: `{"time":"2025-05-01T12:00:00Z","event":"build","error":"step 3:\nexit <1> & more\n"}` + "\n",
	}} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(WithWriter(&buf))
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Log(tt.rec); err != nil {
				t.Fatalf("Log(%v) = %v, want nil", tt.rec, err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("Log(%v) wrote\n%s\nwant\n%s", tt.rec, got, tt.want)
			}
		})
	}
}

func TestLogFillsTime(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(WithWriter(&buf))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := l.Log(Record{Event: EventAuthn}); err != nil {
		t.Fatal(err)
	}
	recs := parseLines(t, "buffer", buf.Bytes())
	if got := recs[0].Time; got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("Log() time = %v, want about %v", got, before)
	}
}

func TestLogFileAndWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var buf bytes.Buffer
	l, err := New(WithFile(path), WithWriter(&buf))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec := Record{Event: EventAuthn, Reason: "bad token"}
	if err := l.Log(rec); err != nil {
		t.Fatalf("Log(%v) = %v, want nil", rec, err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, buf.Bytes()) {
		t.Errorf("file holds %q, writer got %q, want the same line", file, buf.Bytes())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("audit file mode = %v, want %v", got, want)
	}
}

// TestLogAppends checks that a new Logger appends to an existing log
// rather than truncating it.
func TestLogAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for i := range 3 {
		l, err := New(WithFile(path))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Log(Record{Event: EventBuild, JobID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := len(readLines(t, path)), 3; got != want {
		t.Errorf("lines after 3 Loggers = %d, want %d", got, want)
	}
}

// TestLogConcurrent writes from many goroutines, through two Loggers on
// one file as two processes would, and checks that no line was lost or
// torn.
func TestLogConcurrent(t *testing.T) {
	const goroutines, perGoroutine = 50, 100
	path := filepath.Join(t.TempDir(), "audit.log")
	var loggers [2]*Logger
	for i := range loggers {
		l, err := New(WithFile(path))
		if err != nil {
			t.Fatal(err)
		}
		loggers[i] = l
	}
	// A long error makes torn writes likely if writes were not atomic.
	long := strings.Repeat("x", 4096)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := loggers[g%len(loggers)]
			for i := range perGoroutine {
				rec := Record{Event: EventBuild, JobID: fmt.Sprintf("%d-%d", g, i), Error: long}
				if err := l.Log(rec); err != nil {
					t.Errorf("Log(%v) = %v, want nil", rec.JobID, err)
				}
			}
		}()
	}
	wg.Wait()
	for _, l := range loggers {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}

	recs := readLines(t, path)
	if got, want := len(recs), goroutines*perGoroutine; got != want {
		t.Errorf("lines = %d, want %d", got, want)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.JobID] {
			t.Errorf("job %s logged twice", r.JobID)
		}
		seen[r.JobID] = true
		if r.Error != long {
			t.Errorf("job %s error has %d bytes, want %d", r.JobID, len(r.Error), len(long))
		}
	}
}

func TestRotation(t *testing.T) {
	// Every line is 64 bytes: the time and the width of the job ids are
	// fixed.
	const lineLen = 64
	for _, tt := range []struct {
		name       string
		maxSize    int64
		maxBackups int
		records    int
		wantFiles  int // the current file and its backups
		wantKept   int // lines in all files
	}{
		{"fits", 1 << 20, 3, 50, 1, 50},
		{"exactly full", 10 * lineLen, 3, 10, 1, 10},
		{"keeps all", 10 * lineLen, 10, 50, 5, 50},
		{"drops oldest", 10 * lineLen, 3, 200, 4, 40},
		{"limit between lines", 10*lineLen + 10, 3, 200, 4, 40},
		{"one backup", 10 * lineLen, 1, 200, 2, 20},
		// A line larger than the limit gets a file of its own.
		{"tiny limit", 10, 2, 5, 3, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "audit.log")
			l, err := New(WithFile(path), WithMaxSize(tt.maxSize), WithMaxBackups(tt.maxBackups))
			if err != nil {
				t.Fatal(err)
			}
			when := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
			for i := range tt.records {
				rec := Record{Time: when, Event: EventBuild, JobID: fmt.Sprintf("%04d", i)}
				if err := l.Log(rec); err != nil {
					t.Fatalf("Log(%v) = %v, want nil", rec, err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}

			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(entries); got != tt.wantFiles {
				t.Errorf("files = %d, want %d", got, tt.wantFiles)
			}
			// Oldest first: path.n, ..., path.1, path. Every file holds
			// whole lines, no more than fit, and the job ids run on
			// without a gap across files up to the last one logged.
			var files []string
			for i := tt.maxBackups; i >= 1; i-- {
				files = append(files, backupName(path, i))
			}
			files = append(files, path)
			perFile := max(int(tt.maxSize/lineLen), 1)
			next := tt.records - tt.wantKept
			for _, name := range files {
				if _, err := os.Stat(name); errors.Is(err, os.ErrNotExist) {
					continue
				}
				recs := readLines(t, name)
				if len(recs) > perFile || (name != path && len(recs) != perFile) {
					t.Errorf("%s has %d lines, want %d", name, len(recs), perFile)
				}
				for _, r := range recs {
					if want := fmt.Sprintf("%04d", next); r.JobID != want {
						t.Errorf("%s: job %s, want %s", name, r.JobID, want)
					}
					next++
				}
			}
			if next != tt.records {
				t.Errorf("next job after the last logged = %d, want %d", next, tt.records)
			}
		})
	}
}

// TestRotationContinuesExistingFile checks that the size of a file the
// Logger appends to counts towards the limit.
func TestRotationContinuesExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("{}\n"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := New(WithFile(path), WithMaxSize(200))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Log(Record{Event: EventBuild}); err != nil {
		t.Fatal(err)
	}
	if got := len(readLines(t, path)); got != 1 {
		t.Errorf("lines in the new file = %d, want 1", got)
	}
	if got := len(readLines(t, backupName(path, 1))); got != 100 {
		t.Errorf("lines in %s = %d, want 100", backupName(path, 1), got)
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := New(WithFile(path))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	log := func(id string) {
		t.Helper()
		if err := l.Log(Record{Event: EventBuild, JobID: id}); err != nil {
			t.Fatalf("Log(%s) = %v, want nil", id, err)
		}
	}

	log("before")
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	// Until Reopen, lines follow the renamed file: this is why logrotate
	// must signal the process.
	log("renamed")
	if err := l.Reopen(); err != nil {
		t.Fatalf("Reopen() = %v, want nil", err)
	}
	log("after")

	for _, tt := range []struct {
		path string
		want []string
	}{
		{rotated, []string{"before", "renamed"}},
		{path, []string{"after"}},
	} {
		var got []string
		for _, r := range readLines(t, tt.path) {
			got = append(got, r.JobID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s holds jobs %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestReopenWithoutFile(t *testing.T) {
	l, err := New(WithWriter(&bytes.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Errorf("Reopen() = %v, want nil", err)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write(p []byte) (int, error) { return 0, w.err }

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestLogWriteError(t *testing.T) {
	errDisk := errors.New("disk on fire")
	for _, tt := range []struct {
		name string
		w    io.Writer
		want error
	}{
		{"failing", failingWriter{errDisk}, errDisk},
		{"short", shortWriter{}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The good writer still gets the line when the other fails.
			var good bytes.Buffer
			l, err := New(WithWriter(tt.w), WithWriter(&good))
			if err != nil {
				t.Fatal(err)
			}
			rec := Record{Event: EventAuthn}
			err = l.Log(rec)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("Log(%v) = %v, want %v", rec, err, tt.want)
			}
			if good.Len() == 0 {
				t.Errorf("Log(%v) wrote nothing to the working writer", rec)
			}
		})
	}
}

func TestLogFileWriteError(t *testing.T) {
	// /dev/full fails every write with ENOSPC.
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	l, err := New(WithFile("/dev/full"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec := Record{Event: EventAuthn}
	if err := l.Log(rec); err == nil {
		t.Errorf("Log(%v) = nil, want an error", rec)
	}
}

func TestClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := New(WithFile(path), WithWriter(&bytes.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	rec := Record{Event: EventAuthn}
	if err := l.Log(rec); !errors.Is(err, ErrClosed) {
		t.Errorf("Log(%v) = %v, want %v", rec, err, ErrClosed)
	}
	if err := l.Reopen(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reopen() = %v, want %v", err, ErrClosed)
	}
}

func TestBuildArgNames(t *testing.T) {
	for _, tt := range []struct {
		args map[string]string
		want []string
	}{
		{nil, nil},
		{map[string]string{}, nil},
		{map[string]string{"VERSION": "1", "NPM_TOKEN": "t", "A": ""}, []string{"A", "NPM_TOKEN", "VERSION"}},
	} {
		if got := BuildArgNames(tt.args); fmt.Sprint(got) != fmt.Sprint(tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("BuildArgNames(%v) = %v, want %v", tt.args, got, tt.want)
		}
	}
}

// TestBuildArgValuesNeverLogged builds a Record the way callers should,
// from a request's build args, and checks that no value reaches the log,
// neither through the Record (it holds names only) nor through a field
// that quotes one (redacted when the values are passed as secrets).
func TestBuildArgValuesNeverLogged(t *testing.T) {
	args := map[string]string{
		"NPM_TOKEN":  "npm_abcdefghijklmnop",
		"GH_TOKEN":   "ghp_0123456789",
		"DEPLOY_KEY": "-----BEGIN KEY-----\nMIIE\n-----END KEY-----",
	}
	var values []string
	for _, v := range args {
		values = append(values, v)
	}
	var buf bytes.Buffer
	l, err := New(WithWriter(&buf))
	if err != nil {
		t.Fatal(err)
	}
	rec := Record{
		Event:         EventBuild,
		BuildArgNames: BuildArgNames(args),
		Status:        "failed",
		Error:         "RUN npm ci --token=" + args["NPM_TOKEN"] + " failed",
	}
	if err := l.Log(rec, values...); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	recs := parseLines(t, "buffer", buf.Bytes())
	for _, v := range values {
		if strings.Contains(line, v) || strings.Contains(recs[0].Error, v) {
			t.Errorf("Log(%v) = %s, holds build-arg value %q", rec, line, v)
		}
	}
	if got, want := recs[0].BuildArgNames, []string{"DEPLOY_KEY", "GH_TOKEN", "NPM_TOKEN"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Log(%v) build_arg_names = %v, want %v", rec, got, want)
	}
}

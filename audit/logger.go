package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"time"
)

// ErrClosed is returned by a Logger's methods after Close.
var ErrClosed = errors.New("audit log is closed")

// Logger writes Records as JSON lines. It is safe for concurrent use.
type Logger struct {
	path       string
	writers    []io.Writer
	maxSize    int64
	maxBackups int
	secrets    []func() []string

	mu     sync.Mutex
	f      *os.File // nil without WithFile
	size   int64    // bytes in f, for WithMaxSize
	closed bool
}

// New returns a Logger writing where opts say: WithFile, WithWriter or
// both.
func New(opts ...Option) (*Logger, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	l := &Logger{
		path:       o.path,
		writers:    o.writers,
		maxSize:    o.maxSize,
		maxBackups: o.maxBackups,
		secrets:    o.secrets,
	}
	if l.path != "" {
		f, size, err := openLog(l.path)
		if err != nil {
			return nil, err
		}
		l.f, l.size = f, size
	}
	return l, nil
}

// openLog opens path for appending and returns its current size, from
// which rotation counts.
func openLog(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("opening audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("opening audit log: %w", err)
	}
	return f, fi.Size(), nil
}

// Log writes r as one JSON line, filling in r.Time if it is zero. Every
// occurrence of one of secrets, or of the secrets of WithSecrets, in the
// record's free text (Reason and Error) is replaced by "[REDACTED]" first;
// pass the request's secret build-arg values here (SecretBuildArgValues).
// The rest of the record is structure and is written as it is. Secrets
// shorter than 4 bytes are ignored: they would match ordinary text and
// cannot be credentials worth the name.
//
// The line goes to every destination even if one fails; the error joins
// the failures.
func (l *Logger) Log(r Record, secrets ...string) error {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	// Marshalling and redaction happen outside the lock: they are the
	// expensive part and need no shared state.
	redactFreeText(&r, l.knownSecrets(secrets))
	line, err := marshal(r)
	if err != nil {
		return fmt.Errorf("marshalling audit record: %w", err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	var errs []error
	if l.f != nil {
		if l.maxSize > 0 && l.size > 0 && l.size+int64(len(line)) > l.maxSize {
			// A failed rotation must not lose the line: it is still
			// written, to the file that could not be rotated.
			if err := l.rotateLocked(); err != nil {
				errs = append(errs, err)
			}
		}
		// One Write is one write(2) for a regular file: Go only splits
		// writes above 1 GiB, or after a short write such as on a full
		// disk, which is reported below anyway.
		n, err := l.f.Write(line)
		l.size += int64(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("writing audit log: %w", err))
		}
	}
	for _, w := range l.writers {
		n, err := w.Write(line)
		if err == nil && n < len(line) {
			err = io.ErrShortWrite
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("writing audit log: %w", err))
		}
	}
	return errors.Join(errs...)
}

// marshal encodes r as one line. HTML escaping is off because the line is
// never embedded in HTML, and "<nil>" reads better than "\u003cnil\u003e"
// in error messages. Encode ends the line with exactly one newline, and the
// JSON itself has none: newlines in strings are escaped.
func marshal(r Record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// knownSecrets gathers the secrets to redact from one line.
func (l *Logger) knownSecrets(perRecord []string) []string {
	if len(l.secrets) == 0 {
		return perRecord
	}
	all := append([]string(nil), perRecord...)
	for _, known := range l.secrets {
		all = append(all, known()...)
	}
	return all
}

// Reopen closes the log file and opens its path again, for external
// rotation that renames the file: call it on SIGHUP from logrotate's
// postrotate script (see the package documentation). The new file is
// opened before the old one is closed, so that if opening fails the Logger
// keeps writing to the old one rather than losing lines. Without WithFile
// it does nothing.
func (l *Logger) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.f == nil {
		return nil
	}
	f, size, err := openLog(l.path)
	if err != nil {
		return fmt.Errorf("reopening: %w", err)
	}
	old := l.f
	l.f, l.size = f, size
	if err := old.Close(); err != nil {
		return fmt.Errorf("reopening audit log: closing the old file: %w", err)
	}
	return nil
}

// rotateLocked shifts path.(n-1) to path.n, ..., path to path.1 and opens
// a new file at path. Renaming the open file is fine on Unix: l.f follows
// it to path.1 until the new file is open, so a failure half-way leaves a
// file to write to.
func (l *Logger) rotateLocked() error {
	for i := l.maxBackups - 1; i >= 1; i-- {
		err := os.Rename(backupName(l.path, i), backupName(l.path, i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotating audit log: %w", err)
		}
	}
	// A path that is gone (removed by hand) still needs a new file, or
	// every later line would go to the unlinked one.
	err := os.Rename(l.path, backupName(l.path, 1))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotating audit log: %w", err)
	}
	f, size, err := openLog(l.path)
	if err != nil {
		return fmt.Errorf("rotating: %w", err)
	}
	old := l.f
	l.f, l.size = f, size
	if err := old.Close(); err != nil {
		return fmt.Errorf("rotating audit log: closing the old file: %w", err)
	}
	return nil
}

func backupName(path string, i int) string {
	return path + "." + strconv.Itoa(i)
}

// Close closes the log file, after which Log and Reopen return ErrClosed.
// It does not close the writers of WithWriter, which belong to the caller.
// Closing a closed Logger does nothing.
func (l *Logger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing audit log: %w", err)
	}
	return nil
}

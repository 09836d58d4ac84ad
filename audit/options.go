package audit

import (
	"errors"
	"fmt"
	"io"
)

// Option configures a Logger.
type Option func(*options) error

type options struct {
	path       string
	writers    []io.Writer
	maxSize    int64
	maxBackups int
	secrets    []func() []string
}

// defaultMaxBackups is how many rotated files WithMaxSize keeps unless
// WithMaxBackups says otherwise.
const defaultMaxBackups = 5

func makeOptions(opts ...Option) (options, error) {
	o := options{maxBackups: defaultMaxBackups}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	// An audit log that goes nowhere is a misconfiguration, so there is
	// no default destination.
	if o.path == "" && len(o.writers) == 0 {
		return o, errors.New("audit log needs a file or a writer")
	}
	if o.maxSize > 0 && o.path == "" {
		return o, errors.New("audit log rotation needs a file")
	}
	return o, nil
}

// WithFile appends the log to the file at path, creating it with mode 0600
// if needed. The file is opened with O_APPEND and each line is written with
// one write(2), so concurrent goroutines and processes never interleave
// lines. Default: no file. If given more than once, the last path wins.
func WithFile(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("audit file path is empty")
		}
		o.path = path
		return nil
	}
}

// WithWriter also writes the log to w, e.g. os.Stdout for a container's
// log collector. Each line is one w.Write call. The Logger never closes w.
// Default: no writer. It may be given several times, and combined with
// WithFile.
func WithWriter(w io.Writer) Option {
	return func(o *options) error {
		if w == nil {
			return errors.New("audit writer is nil")
		}
		o.writers = append(o.writers, w)
		return nil
	}
}

// WithMaxSize rotates the file of WithFile before a line would take it over
// maxBytes: the file becomes path.1, path.1 becomes path.2 and so on, and
// the oldest beyond WithMaxBackups is deleted. A line is never split across
// files, so a single line longer than maxBytes gets a file to itself.
// Default: no rotation (rotate externally, see Logger.Reopen).
func WithMaxSize(maxBytes int64) Option {
	return func(o *options) error {
		if maxBytes <= 0 {
			return fmt.Errorf("audit max size %d is not positive", maxBytes)
		}
		o.maxSize = maxBytes
		return nil
	}
}

// WithMaxBackups sets how many rotated files (path.1 to path.n) WithMaxSize
// keeps. Default: 5. It has no effect without WithMaxSize.
func WithMaxBackups(n int) Option {
	return func(o *options) error {
		// Zero would make rotation a truncation, silently discarding
		// audit records.
		if n < 1 {
			return fmt.Errorf("audit max backups %d is less than 1", n)
		}
		o.maxBackups = n
		return nil
	}
}

// WithSecrets redacts the secrets that known returns from every line: any
// occurrence of one of them (of at least 4 bytes) in the line's strings is
// replaced by "[REDACTED]". known is called once per line, outside the
// Logger's lock, so it sees secrets added since the Logger was created
// (e.g. newly configured tokens); it must be safe for concurrent use.
// Default: none; secrets can also be passed per line to Log. It may be
// given several times. This is defence in depth: callers must still never
// put secrets in records.
func WithSecrets(known func() []string) Option {
	return func(o *options) error {
		if known == nil {
			return errors.New("audit secrets function is nil")
		}
		o.secrets = append(o.secrets, known)
		return nil
	}
}

package workspace

import (
	"fmt"
	"log/slog"
)

// Option configures Workspaces.
type Option func(*options) error

type options struct {
	memBytes    int64
	concurrency int
	maxBytes    int64
	logger      *slog.Logger
}

func makeOptions(opts ...Option) (options, error) {
	o := options{concurrency: 1, logger: slog.Default()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// WithMemory keeps workspaces in memory, bytes of it in all. If the
// process may mount (root with CAP_SYS_ADMIN), each build gets a tmpfs
// of its own, as large as the workspace limit but at most bytes divided
// by the concurrency, reserved when its workspace is created; a build
// whose reservation, or largest allowed context, does not fit goes to
// disk. Otherwise workspaces share the tmpfs mounted at Layout.Mem, and
// one created while less than a quarter of it is free goes to disk. A
// queued build's tmpfs stays mounted, so it survives a restart of the
// gateway (not of the host). Default 0: workspaces on disk.
func WithMemory(bytes int64) Option {
	return func(o *options) error {
		if bytes < 0 {
			return fmt.Errorf("memory for workspaces must not be negative, got %d", bytes)
		}
		o.memBytes = bytes
		return nil
	}
}

// WithConcurrency is how many builds run at once, which divides the
// memory for workspaces between them. Default 1.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("concurrency must be at least 1, got %d", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithMaxBytes is the workspace limit, the most a build's own tmpfs
// holds. Default 0: its share of the memory.
func WithMaxBytes(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("workspace limit must not be negative, got %d", n)
		}
		o.maxBytes = n
		return nil
	}
}

// WithLogger logs what goes wrong off any caller's path (a workspace that
// could not be unmounted or removed). Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("logger must not be nil")
		}
		o.logger = l
		return nil
	}
}

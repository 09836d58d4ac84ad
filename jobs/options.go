package jobs

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"time"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/builder"
)

// Option configures a Manager.
type Option func(*options) error

type options struct {
	runners       map[string]builder.Runner
	defaultRunner string
	concurrency   int
	jobTimeout    time.Duration
	limits        archive.Limits
	owner         *owner
	insecure      []string
	extraCAs      []byte
	bases         builder.BasePreparer
	baseCheck     BaseCheckFunc
	logger        *slog.Logger
	observers     []Observer
	now           func() time.Time

	ownerConcurrency int
	maxQueued        int
	maxQueuedOwner   int
	maxUploadOwner   int
	shutdownGrace    time.Duration
	retention        time.Duration
	minFreeBytes     uint64
	workspaceMax     int64
	diskCheckEvery   time.Duration
	freeCheckEvery   time.Duration
	memBytes         int64
	logMax           int64
	store            Store
	replica          string
	lease            time.Duration
}

// Observer is told of every accepted and every finished build, for
// metrics. Its methods must not block.
type Observer interface {
	Accepted(j *Job, contextBytes int64)
	// Finished gets the job's final state before it is visible to anyone
	// else.
	Finished(j *Job, final api.Build)
}

// PushObserver is an Observer that is also told of every push to a
// registry, with how long it took.
type PushObserver interface {
	Pushed(j *Job, registry string, d time.Duration, err error)
}

type owner struct{ uid, gid int }

func makeOptions(opts ...Option) (options, error) {
	o := options{
		runners:       map[string]builder.Runner{},
		defaultRunner: "kaniko",
		concurrency:   runtime.NumCPU(),
		jobTimeout:    time.Hour,
		maxQueued:     1000,
		shutdownGrace: 30 * time.Second,
		retention:     7 * 24 * time.Hour,
		minFreeBytes:  1 << 30,
		// What a walk costs is in bench/README.md (Workspace
		// measurement); the watcher waits at least 20 walks between two
		// (lifecycle_disk.go).
		diskCheckEvery: 2 * time.Second,
		// A statfs costs microseconds; a writer at 2 GB/s writes 100
		// MB between two.
		freeCheckEvery: DefaultFreeCheckInterval,
		logMax:         DefaultLogMaxBytes,
		lease:          15 * time.Second,
		logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		now:            time.Now,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	if len(o.runners) == 0 {
		return o, errors.New("no runner configured")
	}
	if _, ok := o.runners[o.defaultRunner]; !ok {
		return o, fmt.Errorf("default runner %q is not configured", o.defaultRunner)
	}
	return o, nil
}

// WithRunner offers r under name. At least one runner is required.
func WithRunner(name string, r builder.Runner) Option {
	return func(o *options) error {
		if name == "" || r == nil {
			return errors.New("runner needs a name and an implementation")
		}
		o.runners[name] = r
		return nil
	}
}

// runnerNames returns the names of the runners, sorted.
func (o options) runnerNames() []string {
	return slices.Sorted(maps.Keys(o.runners))
}

// WithConcurrency bounds how many builds run at once. Default: the number
// of CPUs.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("concurrency must be at least 1, got %d", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithJobTimeout bounds how long one build may run. Default one hour.
func WithJobTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("job timeout must be positive, got %s", d)
		}
		o.jobTimeout = d
		return nil
	}
}

// WithContextLimits bounds an uploaded context. Default: archive's
// defaults.
func WithContextLimits(l archive.Limits) Option {
	return func(o *options) error { o.limits = l; return nil }
}

// WithWorkspaceOwner hands every workspace to uid:gid, the user the
// sandboxes run as, when the gateway itself runs as root. Default: the
// workspace stays the gateway's.
func WithWorkspaceOwner(uid, gid int) Option {
	return func(o *options) error { o.owner = &owner{uid, gid}; return nil }
}

// WithInsecureRegistries lists registries that runners may pull FROM over
// plain HTTP. Default none.
func WithInsecureRegistries(regs ...string) Option {
	return func(o *options) error { o.insecure = append(o.insecure, regs...); return nil }
}

// WithObserver reports accepted and finished builds to o, in addition to
// any observer given before. Default: none.
func WithObserver(o Observer) Option {
	return func(opts *options) error {
		if o == nil {
			return errors.New("nil observer")
		}
		opts.observers = append(opts.observers, o)
		return nil
	}
}

// WithExtraCAs makes sandboxes trust these PEM roots besides the system's.
// Default none.
func WithExtraCAs(pem []byte) Option {
	return func(o *options) error { o.extraCAs = pem; return nil }
}

// WithBaseImages has p fetch every build's base images before its runner
// starts. No runner pulls (no sandbox gets registry credentials), so p is
// where a build's FROM and COPY --from images come from. Default: none;
// then only builds that pull no image (FROM scratch) work.
func WithBaseImages(p builder.BasePreparer) Option {
	return func(o *options) error { o.bases = p; return nil }
}

// WithBaseCheck makes the builder.BasePreparer ask f about each image a stage of
// a build is built on, with its ONBUILD triggers, before fetching its
// layers. Default: no check.
func WithBaseCheck(f BaseCheckFunc) Option {
	return func(o *options) error { o.baseCheck = f; return nil }
}

// WithLogger sets the gateway log. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// WithOwnerConcurrency bounds how many builds of one tenant (a grant's
// LimitTenant, else one identity) run at once, whatever its grant says.
// Default 0: only the grant bounds it.
func WithOwnerConcurrency(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("per-identity concurrency must not be negative, got %d", n)
		}
		o.ownerConcurrency = n
		return nil
	}
}

// WithMaxQueued bounds how many builds may wait, in all (total) and per
// tenant (perOwner; a grant's LimitTenant, else one identity); a
// submission beyond either is refused with a *QueueFullError before its
// context is read. 0 means no bound. Default 1000 in all, none per
// tenant.
func WithMaxQueued(total, perOwner int) Option {
	return func(o *options) error {
		if total < 0 || perOwner < 0 {
			return fmt.Errorf("queue bounds must not be negative, got %d and %d", total, perOwner)
		}
		o.maxQueued, o.maxQueuedOwner = total, perOwner
		return nil
	}
}

// WithMaxUploading bounds how many submissions of one tenant may be
// uploading their context at once; one more is refused with a
// *QueueFullError before its context is read. 0 means no bound. Default
// none.
func WithMaxUploading(perOwner int) Option {
	return func(o *options) error {
		if perOwner < 0 {
			return fmt.Errorf("upload bound must not be negative, got %d", perOwner)
		}
		o.maxUploadOwner = perOwner
		return nil
	}
}

// WithShutdownGrace is how long running builds may go on once Run's
// context ends before they are cancelled. Queued builds stay queued for
// the next start. Default 30s.
func WithShutdownGrace(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("shutdown grace must not be negative, got %s", d)
		}
		o.shutdownGrace = d
		return nil
	}
}

// WithRetention is how long the records and logs of finished builds are
// kept. Default 7 days.
func WithRetention(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("retention must be positive, got %s", d)
		}
		o.retention = d
		return nil
	}
}

// WithMinFreeBytes is the free space the state directory needs for the
// gateway to report itself ready. A running build whose workspace grows
// while less than this is free is stopped before the disk fills, as long
// as it writes less than this in about one free space check
// (WithFreeCheckInterval) and one measurement of its workspace. Default
// 1 GiB; 0: no check.
func WithMinFreeBytes(n uint64) Option {
	return func(o *options) error { o.minFreeBytes = n; return nil }
}

// WithWorkspaceLimit bounds the disk one running build's workspace may
// take (context, unpacked base images, RUN output, the built image):
// beyond it the build is stopped and fails naming the limit. Default 0:
// unbounded.
func WithWorkspaceLimit(maxBytes int64) Option {
	return func(o *options) error {
		if maxBytes < 0 {
			return fmt.Errorf("workspace limit must not be negative, got %d", maxBytes)
		}
		o.workspaceMax = maxBytes
		return nil
	}
}

// WithMemoryWorkspaces keeps workspaces in memory, maxBytes of it in
// all, placed as workspace.WithMemory says (a tmpfs per build where the
// Manager may mount). Default 0: workspaces on disk.
func WithMemoryWorkspaces(maxBytes int64) Option {
	return func(o *options) error {
		if maxBytes < 0 {
			return fmt.Errorf("memory for workspaces must not be negative, got %d", maxBytes)
		}
		o.memBytes = maxBytes
		return nil
	}
}

// WithDiskCheckInterval is how often a running build's workspace is
// measured against the workspace limit and the free space of the state
// directory; longer when measuring takes long. Default 2s.
func WithDiskCheckInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("disk check interval must be positive, got %s", d)
		}
		o.diskCheckEvery = d
		return nil
	}
}

// DefaultFreeCheckInterval is how often, by default, the free space of
// the filesystem of a running build's workspace on disk is read.
const DefaultFreeCheckInterval = 50 * time.Millisecond

// WithFreeCheckInterval is how often the free space of the filesystem of
// a running build's workspace on disk (or on the shared tmpfs) is read:
// when it is under min_free_bytes and falling, the workspace is measured
// at once and the build stopped if it grew since its last measurement,
// so a writer is stopped before the disk fills as long as it writes less
// than min_free_bytes in about this interval plus one measurement.
// Default DefaultFreeCheckInterval (50ms).
func WithFreeCheckInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("free space check interval must be positive, got %s", d)
		}
		o.freeCheckEvery = d
		return nil
	}
}

// DefaultLogMaxBytes is the default cap of one build's log.
const DefaultLogMaxBytes = 64 << 20

// WithLogLimit caps the log one build keeps: past maxBytes it keeps its
// first and its last half of maxBytes, with a line saying how many bytes
// were dropped between them. Default DefaultLogMaxBytes (64 MiB); 0: no
// cap.
func WithLogLimit(maxBytes int64) Option {
	return func(o *options) error {
		if maxBytes < 0 || (maxBytes > 0 && maxBytes < 4<<10) {
			return fmt.Errorf("log limit must be 0 or at least 4 KiB, got %d", maxBytes)
		}
		o.logMax = maxBytes
		return nil
	}
}

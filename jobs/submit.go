// Submission: a build is validated, its context extracted into a new
// workspace and authorized, then it is queued, at most once per
// idempotency key.

package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs/store"
)

// SubmitRequest is an accepted upload's metadata.
type SubmitRequest struct {
	// Owner is the authenticated identity; only it sees the build.
	Owner string
	Spec  api.BuildSpec
	// IdempotencyKey, if set, makes a repeated submission by the same owner
	// return the first one's build.
	IdempotencyKey string
	// Identity is the caller in full, recorded with the job for auditing.
	Identity auth.Identity
	// Authorize, if set, decides whether the build may run.
	Authorize AuthorizeFunc
	// ReadTokenSHA256, if not zero, is the sha256 of the read token the
	// caller is given for the build: it replaces the build's earlier one
	// when the submission is a repeat.
	ReadTokenSHA256 [sha256.Size]byte
}

// Submit validates the spec, extracts the context archive read from r into
// a new workspace and queues the build. Nothing is queued unless all of it
// is valid; on error the workspace is gone again.
func (m *Manager) Submit(ctx context.Context, sr SubmitRequest, r io.Reader) (*Job, error) {
	spec, err := Validate(sr.Spec, m.o.runnerNames(), m.o.defaultRunner)
	if err != nil {
		return nil, err
	}
	// A runner this host cannot run (dockerd not installed, say) is
	// refused up front, not after the upload.
	if ch, ok := m.o.runners[spec.Runner].(builder.Checker); ok {
		if err := ch.Available(ctx); err != nil {
			return nil, &SpecError{"runner", fmt.Sprintf("%q is not available on this gateway: %v", spec.Runner, err)}
		}
	}

	if sr.IdempotencyKey != "" {
		return m.once(ctx, idempotencyKey{owner: sr.Owner, key: sr.IdempotencyKey}, sr.ReadTokenSHA256, func() (*Job, error) {
			return m.accept(ctx, sr, spec, r)
		})
	}
	return m.accept(ctx, sr, spec, r)
}

func (m *Manager) accept(ctx context.Context, sr SubmitRequest, spec *ValidSpec, r io.Reader) (_ *Job, err error) {
	owner := sr.Owner
	var grant Grant
	limits := m.o.limits
	if sr.Authorize != nil {
		// Refuse what the spec alone decides before reading any context.
		if grant, err = sr.Authorize(spec, nil, nil); err != nil {
			return nil, err
		}
		if grant.MaxContextBytes > 0 && (limits.MaxBytes <= 0 || grant.MaxContextBytes < limits.MaxBytes) {
			limits.MaxBytes = grant.MaxContextBytes
		}
	}
	// The tenant the slot is reserved for is the build's, whatever a
	// policy reloaded during the upload would say.
	tenant := grant.LimitTenant
	key := limitKey(owner, tenant)
	if err := m.reserve(key); err != nil {
		return nil, err
	}
	queued := false
	defer func() {
		if !queued {
			m.release(key)
		}
	}()
	id, err := newID()
	if err != nil {
		return nil, err
	}
	ws, err := m.ws.Create(id, limits)
	if err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	defer func() {
		if err != nil {
			m.removeWorkspace(context.WithoutCancel(ctx), spec.Runner, ws)
		}
	}()
	ctxDir := filepath.Join(ws, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	if err := m.chown(ws, ctxDir); err != nil {
		return nil, err
	}
	var xopts []archive.Option
	if m.o.owner != nil {
		xopts = append(xopts, archive.WithOwner(m.o.owner.uid, m.o.owner.gid))
	}
	var upload *os.File
	if m.shared != nil {
		// The archive as uploaded goes to the shared store, for whichever
		// replica runs the build: as much of it as the extraction reads,
		// which the limits bound.
		if upload, err = os.CreateTemp(m.layout.Root, uploadPrefix); err != nil {
			return nil, fmt.Errorf("keeping the upload: %w", err)
		}
		defer func() {
			upload.Close()
			os.Remove(upload.Name())
		}()
		r = io.TeeReader(r, upload)
	}
	stats, err := archive.Extract(ctx, r, ctxDir, limits, xopts...)
	if err != nil {
		return nil, err
	}
	df, err := archive.ValidateDockerfile(ctxDir, spec.Dockerfile)
	if err != nil {
		return nil, err
	}
	spec.Dockerfile = df
	dfBytes, err := dockerfile.Read(ctxDir, df)
	if err != nil {
		return nil, err
	}
	dfSum := sha256.Sum256(dfBytes)
	// Parsed once, here: the policy, the base store and the runner all
	// read this analysis.
	analysis, err := analyzeDockerfile(dfBytes, spec, m.o.runners[spec.Runner])
	if err != nil {
		return nil, err
	}
	if sr.Authorize != nil {
		if grant, err = sr.Authorize(spec, dfBytes, analysis); err != nil {
			return nil, err
		}
		grant.LimitTenant = tenant
	}

	j := &Job{
		ID:               id,
		Owner:            owner,
		Identity:         sr.Identity,
		Grant:            grant,
		DockerfileSHA256: hex.EncodeToString(dfSum[:]),
		analysis:         analysis,
		Spec:             spec,
		ContextSHA256:    stats.SHA256,
		workspace:        ws,
		idemKey:          sr.IdempotencyKey,
		readTokenSHA256:  sr.ReadTokenSHA256,
		status:           api.StatusQueued,
		created:          m.o.now(),
		done:             make(chan struct{}),
	}
	j.transitions = []store.Transition{{Status: api.StatusQueued, At: j.created}}
	if m.shared != nil {
		return m.acceptShared(ctx, j, upload, stats)
	}
	lg, err := newLog(m.layout.Log(id), m.o.logMax)
	if err != nil {
		return nil, err
	}
	j.Log = lg
	// Accepted means recorded: the 202 goes out only once the job would
	// survive a crash of the gateway.
	if err := m.save(j); err != nil {
		lg.Close()
		os.Remove(lg.path)
		return nil, err
	}
	m.o.logger.Info("build accepted", "job", id, "owner", owner, "context_sha256", stats.SHA256,
		"context_files", stats.Files, "context_bytes", stats.Bytes, "dockerfile", spec.Dockerfile,
		"destinations", spec.Destinations, "build_args", slices.Sorted(maps.Keys(spec.BuildArgs)), "runner", spec.Runner)
	lg.Printf("accepted: %d files, %d bytes, context sha256:%s", stats.Files, stats.Bytes, stats.SHA256)

	m.mu.Lock()
	m.jobs[id] = j
	m.pending--
	if m.pendingBy[key]--; m.pendingBy[key] <= 0 {
		delete(m.pendingBy, key)
	}
	queued = true
	m.queue.push(j)
	close(m.wake)
	m.wake = make(chan struct{})
	m.mu.Unlock()
	for _, o := range m.o.observers {
		o.Accepted(j, stats.Bytes)
	}
	return j, nil
}

func (m *Manager) chown(paths ...string) error {
	if m.o.owner == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, m.o.owner.uid, m.o.owner.gid); err != nil {
			return fmt.Errorf("handing workspace to the sandbox user: %w", err)
		}
	}
	return nil
}

func newID() (string, error) {
	var b [15]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making build id: %w", err)
	}
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:])), nil
}

package jobs

import (
	"fmt"
	"time"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/netmode"
)

// AuthorizeFunc decides whether a submission may be built. It is called
// twice: first with a nil Dockerfile, right after the spec is validated
// and before any of the context is read, then with the Dockerfile and its
// analysis once the context is extracted (for the FROM check). A
// *DeniedError refuses the build; nothing is queued and the workspace is
// removed.
type AuthorizeFunc func(spec *ValidSpec, dockerfile []byte, analysis *dockerfile.Analysis) (Grant, error)

// BaseCheckFunc decides whether a build may use image, which a stage of
// its Dockerfile (analysis) is built on, given the image's ONBUILD
// triggers. It is asked when the build runs, once the image's config is
// fetched and before any of its layers; a *DeniedError fails the build.
type BaseCheckFunc func(id auth.Identity, spec *ValidSpec, analysis *dockerfile.Analysis, image string, onbuild []string) error

// Grant is what an authorization allows a build. Zero fields mean the
// gateway's own defaults.
type Grant struct {
	// MaxContextBytes bounds the context of this build below the gateway's
	// limit.
	MaxContextBytes int64
	// Timeout bounds this build below the gateway's job timeout.
	Timeout time.Duration
	// MaxConcurrent bounds how many builds of the same tenant run at once.
	MaxConcurrent int
	// LimitTenant names whose builds count as one against the queue's
	// per-identity bounds, its turns and MaxConcurrent: from the policy's
	// tenant, so that an identity per branch is not a share per branch;
	// empty: the owner alone. The record keeps it apart from the grant
	// (store.Record.LimitTenant).
	LimitTenant string `json:"-"`
	// Network is the network of the build's RUN steps (builder.Request.Network).
	Network netmode.Mode
	// CacheTenant names the caches the build shares with other builds
	// (builder.Request.Tenant), from the policy's cache.scope; empty: a cache of
	// the identity's own, unless NoCache.
	CacheTenant string
	// NoCache: the build reads and fills no cache of other builds.
	NoCache bool
}

// DeniedError is a refusal by policy. The HTTP layer answers it with 403.
type DeniedError struct {
	// Rule is the policy rule that decided, empty if none matched.
	Rule   string
	Reason string
}

// Error is the reason alone: the policy's reasons name their rule.
func (e *DeniedError) Error() string { return fmt.Sprintf("denied: %s", e.Reason) }

var _ error = (*DeniedError)(nil)

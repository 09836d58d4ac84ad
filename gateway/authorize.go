package gateway

import (
	"context"
	"log/slog"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
)

// policyAuthorizer enforces the policy file's current version.
type policyAuthorizer struct {
	store *policy.Store
	// bases resolves the configs of base images, for their ONBUILD
	// triggers; nil: they are checked only when the build runs.
	bases    *basestore.Store
	insecure []string // registries reached over plain HTTP
	log      *slog.Logger
}

var _ server.Policy = policyAuthorizer{}

func (p policyAuthorizer) Authorize(ctx context.Context, id auth.Identity, spec *jobs.ValidSpec, analysis *dockerfile.Analysis) (string, jobs.Grant, error) {
	pol := p.store.Policy()
	req := policy.Request{
		Identity:     id,
		Destinations: spec.Tags,
		Runner:       spec.Runner,
		Dockerfile:   analysis,
	}
	d := pol.Decide(req)
	g := jobs.Grant{MaxContextBytes: d.Limits.MaxContextBytes, Timeout: d.Limits.Timeout, MaxConcurrent: d.Limits.MaxConcurrent, Network: d.Network}
	if d.Allowed {
		g.CacheTenant = d.CacheScope.Tenant(id)
		g.NoCache = g.CacheTenant == ""
		// A tenant of one identity stays unnamed: its builds then count
		// under their owner, as those stored before tenants do, rather
		// than under a second key beside them after an upgrade.
		if d.Tenant != policy.CacheIdentity {
			g.LimitTenant = d.Tenant.Tenant(id)
		}
	}
	if !d.Allowed {
		return d.Rule, g, &jobs.DeniedError{Rule: d.Rule, Reason: d.Reason}
	}
	if analysis != nil && p.bases != nil {
		if err := p.checkOnbuild(ctx, pol, req); err != nil {
			return d.Rule, g, err
		}
	}
	return d.Rule, g, nil
}

// checkOnbuild refuses, with a 403 at submission, a build whose base
// images have ONBUILD triggers that read images the rule does not allow.
// Only the manifests and configs are fetched. A base image that cannot be
// resolved now is left to the build, which checks every base image again
// before fetching its layers (a tag may move in between anyway).
func (p policyAuthorizer) checkOnbuild(ctx context.Context, pol *policy.Policy, req policy.Request) error {
	for _, ref := range req.Dockerfile.StageImages() {
		if slices.Contains(p.insecure, ref.Context().RegistryStr()) {
			insecure, err := name.ParseReference(ref.String(), name.Insecure)
			if err != nil {
				return nil
			}
			ref = insecure
		}
		cfg, err := p.bases.Config(ctx, ref)
		if err != nil {
			p.log.Info("base image not resolved at submission; checked when the build runs", "image", ref.Name(), "error", err)
			continue
		}
		if d := pol.CheckOnbuild(req, ref.Name(), cfg.Config.OnBuild); !d.Allowed {
			return &jobs.DeniedError{Rule: d.Rule, Reason: d.Reason}
		}
	}
	return nil
}

// CheckBase is the jobs.BaseCheckFunc: the ONBUILD triggers of a
// build's base image, checked when it runs, against the current policy.
func (p policyAuthorizer) CheckBase(id auth.Identity, spec *jobs.ValidSpec, analysis *dockerfile.Analysis, image string, onbuild []string) error {
	d := p.store.Policy().CheckOnbuild(policy.Request{
		Identity: id, Destinations: spec.Tags, Runner: spec.Runner, Dockerfile: analysis,
	}, image, onbuild)
	if !d.Allowed {
		return &jobs.DeniedError{Rule: d.Rule, Reason: d.Reason}
	}
	return nil
}

// auditObserver writes one record per build outcome.
type auditObserver struct{ log *audit.Logger }

var _ jobs.Observer = auditObserver{}

func (auditObserver) Accepted(*jobs.Job, int64) {}

func (a auditObserver) Finished(j *jobs.Job, b api.Build) {
	id := j.Identity
	rec := audit.Record{
		Event: audit.EventBuild, JobID: j.ID, Identity: &id, Action: "build.run",
		ContextSHA256: j.ContextSHA256, Dockerfile: j.Spec.Dockerfile, DockerfileSHA256: j.DockerfileSHA256,
		Destinations: j.Spec.Destinations, BuildArgNames: audit.BuildArgNames(j.Spec.BuildArgs),
		Runner: j.Spec.Runner, Status: string(b.Status), Digest: b.Digest, Error: b.Error,
	}
	for _, bi := range j.BaseImages() {
		rec.BaseImages = append(rec.BaseImages, bi.Name+"@"+bi.Digest)
	}
	if b.FinishedAt != nil {
		rec.TotalSeconds = b.FinishedAt.Sub(b.CreatedAt).Seconds()
		if b.StartedAt != nil {
			rec.QueuedSeconds = b.StartedAt.Sub(b.CreatedAt).Seconds()
			rec.BuildSeconds = b.FinishedAt.Sub(*b.StartedAt).Seconds()
		}
	}
	a.log.Log(rec, audit.SecretBuildArgValues(j.Spec.BuildArgs, j.Spec.SecretBuildArgs)...)
}

// logPolicyWarnings logs what a freshly loaded policy allows that is
// likely not meant, once per load.
func logPolicyWarnings(log *slog.Logger, p *policy.Policy) {
	for _, w := range p.Warnings() {
		log.Warn("policy: " + w)
	}
}

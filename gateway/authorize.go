package gateway

import (
	"log/slog"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/server"
	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/audit"
	"github.com/buildgw/buildgw/builder/policy"
)

// policyAuthorizer enforces the policy file's current version.
type policyAuthorizer struct{ store *policy.Store }

var _ server.Policy = policyAuthorizer{}

func (p policyAuthorizer) Authorize(id auth.Identity, spec *builder.ValidSpec, dockerfile []byte) (string, builder.Grant, error) {
	d := p.store.Policy().Decide(policy.Request{
		Identity:     id,
		Destinations: spec.Tags,
		Runner:       spec.Runner,
		Dockerfile:   dockerfile,
		BuildArgs:    spec.BuildArgs,
		Target:       spec.Target,
	})
	g := builder.Grant{MaxContextBytes: d.Limits.MaxContextBytes, Timeout: d.Limits.Timeout, MaxConcurrent: d.Limits.MaxConcurrent, Network: d.Network}
	if !d.Allowed {
		return d.Rule, g, &builder.DeniedError{Rule: d.Rule, Reason: d.Reason}
	}
	return d.Rule, g, nil
}

// auditObserver writes one record per build outcome.
type auditObserver struct{ log *audit.Logger }

var _ builder.Observer = auditObserver{}

func (auditObserver) Accepted(*builder.Job, int64) {}

func (a auditObserver) Finished(j *builder.Job, b api.Build) {
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
	var secrets []string
	for _, v := range j.Spec.BuildArgs {
		secrets = append(secrets, v)
	}
	a.log.Log(rec, secrets...)
}

// logPolicyWarnings logs what a freshly loaded policy allows that is
// likely not meant, once per load.
func logPolicyWarnings(log *slog.Logger, p *policy.Policy) {
	for _, w := range p.Warnings() {
		log.Warn("policy: " + w)
	}
}

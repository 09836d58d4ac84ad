package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildgw/buildgw/auth"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/netmode"
)

// Policy is a loaded, validated policy. It is immutable, so one value can
// be shared by any number of goroutines; reloading makes a new one.
type Policy struct {
	rules []rule
}

type rule struct {
	name         string
	match        []matcher
	destinations []repoPattern
	tags         []tagPattern
	denyTags     []string
	from         []fromEntry
	runners      []string
	limits       Limits
	network      netmode.Mode
	cacheScope   CacheScope
	tenant       CacheScope
}

// fromEntry is one allow.from entry: a repository pattern, or, as
// policies wrote before repository patterns, a whole registry or "*".
type fromEntry struct {
	src  string
	any  bool        // "*"
	host string      // a bare registry: any repository of it
	repo repoPattern // else
}

type matcher struct {
	key     string // kind, name, issuer, or an attribute name
	pattern string // path.Match glob
}

// Limits bound a build. A zero field means the rule sets no limit of that
// kind and the gateway's own default applies.
type Limits struct {
	MaxContextBytes int64
	Timeout         time.Duration
	MaxConcurrent   int
}

// Request is what a build asks to do, as far as policy cares.
type Request struct {
	Identity auth.Identity
	// Destinations are the tags to push, from jobs.ValidSpec.Tags.
	Destinations []name.Tag
	Runner       string
	// Dockerfile is nil for the first check, made before the build
	// context (which holds the Dockerfile) has been read; the images the
	// Dockerfile pulls are then checked by a second Decide with it set.
	// It was analyzed with the build's args and target; the target does
	// not narrow the check: every stage's images are checked, which is a
	// superset of what any runner pulls for any target.
	Dockerfile *dockerfile.Analysis
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed bool
	// Rule is the name of the rule that decided, or "" if none matched.
	Rule string
	// Reason says why, in words that are safe to show the caller: it names
	// the rule and the refused item.
	Reason string
	// Limits are the deciding rule's limits, set when Allowed.
	Limits Limits
	// Network is the deciding rule's allow.network, set when Allowed;
	// empty if the rule leaves it to the gateway's default.
	Network netmode.Mode
	// CacheScope is the deciding rule's cache.scope, set when Allowed:
	// which identities' builds share caches (see CacheScope.Tenant).
	CacheScope CacheScope
	// Tenant is the deciding rule's tenant, set when Allowed: which
	// identities' builds count as one against the queue's per-identity
	// bounds, its turns and the rule's max_concurrent (see
	// CacheScope.Tenant, which names them). Never CacheNone.
	Tenant CacheScope
}

// Rules returns the names of the rules, in the order they are tried.
func (p *Policy) Rules() []string {
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

// Decide applies the policy to r. Rules are tried in file order and the
// first whose match holds decides alone: later rules are not consulted,
// even if they would allow what the first refuses. With no matching rule
// the request is denied.
//
// Decide is meant to be called twice for a build: first with a nil
// Dockerfile, to refuse a request on its destinations and runner before
// its context is read, and again once the Dockerfile is known, to check
// the images it pulls. Both calls see the same rule for the same identity.
func (p *Policy) Decide(r Request) Decision {
	if p == nil {
		return Decision{Reason: "no policy is loaded"}
	}
	ru := p.ruleFor(r.Identity)
	if ru == nil {
		return Decision{Reason: fmt.Sprintf("no policy rule matches identity %q", r.Identity.Name)}
	}
	deny := func(format string, args ...any) Decision {
		return Decision{Rule: ru.name, Reason: fmt.Sprintf("policy rule %q ", ru.name) + fmt.Sprintf(format, args...)}
	}

	if !slices.Contains(ru.runners, r.Runner) {
		return deny("does not allow runner %q (allowed: %s)", r.Runner, strings.Join(ru.runners, ", "))
	}
	if len(r.Destinations) == 0 {
		return deny("refuses a build with no destination")
	}

	// Fill in this identity's attributes once. Unusable patterns are
	// remembered only to explain a denial.
	attrs := r.Identity.Attributes
	var repos []boundRepo
	var tags []string
	var repoNote, tagNote []string
	for _, rp := range ru.destinations {
		b, err := rp.bind(attrs)
		if err != nil {
			repoNote = append(repoNote, fmt.Sprintf("%s is unusable: %v", rp.src, err))
			continue
		}
		repos = append(repos, b)
	}
	for _, tp := range ru.tags {
		g, err := tp.bind(attrs)
		if err != nil {
			tagNote = append(tagNote, fmt.Sprintf("tag %s is unusable: %v", tp.src, err))
			continue
		}
		tags = append(tags, g)
	}

	for _, d := range r.Destinations {
		repo, tag := d.Context().Name(), d.TagStr()
		dest := repo + ":" + tag
		if !validRepository(repo) {
			return deny("does not allow pushing to %s: not a valid repository name", dest)
		}
		if !slices.ContainsFunc(repos, func(b boundRepo) bool { return b.match(repo) }) {
			return deny("does not allow pushing to %s: repository not in allow.destinations%s", dest, parens(repoNote))
		}
		if !slices.ContainsFunc(tags, func(g string) bool { return globMatch(g, tag) }) {
			return deny("does not allow pushing to %s: tag not in allow.tags%s", dest, parens(tagNote))
		}
		if i := slices.IndexFunc(ru.denyTags, func(g string) bool { return globMatch(g, tag) }); i >= 0 {
			return deny("does not allow pushing to %s: tag matches deny_tags %q", dest, ru.denyTags[i])
		}
	}

	if r.Dockerfile != nil {
		from := ru.bindFrom(attrs)
		for _, img := range r.Dockerfile.Images {
			if !from.allows(img.Ref) {
				return deny("does not allow image %s (%s): repository %s is not in allow.from%s",
					img.Ref.Name(), img.Where, img.Ref.Context().Name(), parens(from.notes))
			}
		}
	}
	return ru.allow()
}

// CheckOnbuild decides whether the ONBUILD triggers of base, an image a
// stage of r.Dockerfile is built on, may run in the build: every image
// they read (COPY --from, RUN --mount from=) must pass the deciding rule's
// allow.from, as the Dockerfile's own images do. A trigger naming a stage
// of the Dockerfile reads that stage. The triggers come from the image's
// config, which the gateway fetches before any of the image's layers.
func (p *Policy) CheckOnbuild(r Request, base string, triggers []string) Decision {
	if p == nil {
		return Decision{Reason: "no policy is loaded"}
	}
	ru := p.ruleFor(r.Identity)
	if ru == nil {
		return Decision{Reason: fmt.Sprintf("no policy rule matches identity %q", r.Identity.Name)}
	}
	if len(triggers) == 0 {
		return ru.allow()
	}
	if r.Dockerfile == nil {
		return Decision{Rule: ru.name, Reason: fmt.Sprintf("policy rule %q refuses the build: ONBUILD triggers of %s checked without the Dockerfile", ru.name, base)}
	}
	ob, err := r.Dockerfile.Onbuild(base, triggers)
	if err != nil {
		return Decision{Rule: ru.name, Reason: fmt.Sprintf("policy rule %q refuses the build: %v", ru.name, err)}
	}
	from := ru.bindFrom(r.Identity.Attributes)
	for _, img := range ob.Images {
		if !from.allows(img.Ref) {
			return Decision{Rule: ru.name, Reason: fmt.Sprintf("policy rule %q does not allow image %s (%s): repository %s is not in allow.from%s",
				ru.name, img.Ref.Name(), img.Where, img.Ref.Context().Name(), parens(from.notes))}
		}
	}
	return ru.allow()
}

// allow is the Decision of a rule that allows.
func (ru *rule) allow() Decision {
	return Decision{
		Allowed:    true,
		Rule:       ru.name,
		Reason:     fmt.Sprintf("allowed by policy rule %q", ru.name),
		Limits:     ru.limits,
		Network:    ru.network,
		CacheScope: ru.cacheScope,
		Tenant:     ru.tenant,
	}
}

// ruleFor returns the first rule whose match holds for id.
func (p *Policy) ruleFor(id auth.Identity) *rule {
	for i := range p.rules {
		if p.rules[i].matches(id) {
			return &p.rules[i]
		}
	}
	return nil
}

// matches reports whether every match entry holds. A missing attribute
// never matches, not even "*": the rule is about identities that have it.
func (r *rule) matches(id auth.Identity) bool {
	for _, m := range r.match {
		var v string
		var ok bool
		switch m.key {
		case "kind":
			v, ok = string(id.Kind), id.Kind != ""
		case "name":
			v, ok = id.Name, id.Name != ""
		case "issuer":
			v, ok = id.Issuer, id.Issuer != ""
		default:
			v, ok = id.Attributes[m.key]
		}
		if !ok || !globMatch(m.pattern, v) {
			return false
		}
	}
	return true
}

// boundFrom is a rule's allow.from with an identity's attributes filled
// in; notes explain entries unusable for it.
type boundFrom struct {
	any   bool
	hosts []string
	repos []boundRepo
	notes []string
}

func (r *rule) bindFrom(attrs map[string]string) boundFrom {
	var b boundFrom
	for _, f := range r.from {
		switch {
		case f.any:
			b.any = true
		case f.host != "":
			b.hosts = append(b.hosts, f.host)
		default:
			br, err := f.repo.bind(attrs)
			if err != nil {
				b.notes = append(b.notes, fmt.Sprintf("%s is unusable: %v", f.src, err))
				continue
			}
			b.repos = append(b.repos, br)
		}
	}
	return b
}

// allows reports whether the image ref may be read.
func (b boundFrom) allows(ref name.Reference) bool {
	if b.any {
		return true
	}
	repo := ref.Context()
	if slices.Contains(b.hosts, strings.ToLower(repo.RegistryStr())) {
		return true
	}
	return slices.ContainsFunc(b.repos, func(br boundRepo) bool { return br.match(repo.Name()) })
}

// Warnings are what a policy allows that is likely not meant: allow.from
// entries that let one tenant read another's private images. They are
// worth logging whenever the policy is loaded.
func (p *Policy) Warnings() []string {
	if p == nil {
		return nil
	}
	var out []string
	for _, r := range p.rules {
		for _, f := range r.from {
			if f.any || f.host != "" {
				out = append(out, fmt.Sprintf("rule %q: allow.from %q lets its builds read any repository of %s, including other tenants' private images, "+
					"which the gateway pulls with its own credentials; name repositories instead, e.g. registry.example.com/{project_path}/*",
					r.name, f.src, map[bool]string{true: "any registry", false: f.host}[f.any]))
			}
		}
	}
	return out
}

// parens joins notes as a parenthesized suffix, or "" if there are none.
func parens(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

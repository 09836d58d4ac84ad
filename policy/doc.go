// Package policy decides whether an identity may run a build: which
// repositories and tags it may push, which registries the images its
// Dockerfile pulls may come from, which runners it may use, and with what
// limits. It denies by default.
//
// # Policy file
//
// A policy is a YAML file with a list of rules (see
// examples/policy/policy.yaml for a commented one). Unknown keys are
// errors.
//
//	rules:
//	  - name: gitlab-protected
//	    match: {kind: oidc, issuer: https://gitlab.example.com, ref_protected: "true"}
//	    allow:
//	      destinations: [registry.example.com/{project_path}, registry.example.com/{project_path}/*]
//	      tags: ["*"]
//	      deny_tags: []
//	      from: [registry.example.com/{project_path}/**, registry.example.com/base/*, docker.io/library/*]
//	      runners: [kaniko]
//	      limits: {max_context_bytes: 1073741824, timeout: 30m, max_concurrent: 4}
//	      network: egress
//
// # Which rule decides
//
// Rules are tried in file order and the first whose match holds decides
// alone; later rules are never consulted. So put narrow rules before broad
// ones. No matching rule means denied. A rule whose destinations list is
// empty matches its identities and denies all their builds: that is how to
// write an explicit deny rule.
//
// match holds when every entry does. The keys kind, name and issuer match
// the identity's Kind, Name and Issuer; any other key matches the
// attribute of that name, and a missing attribute never matches, not even
// "*". Values are path.Match globs, in which "*" does not cross "/".
//
// # What a rule allows
//
// A matching rule denies the request if any one item is outside it, and
// the reason names the rule and that item:
//
//   - every destination's repository must match one of allow.destinations,
//     its tag one of allow.tags (default ["*"]) and none of deny_tags;
//   - every image the Dockerfile pulls (dockerfile.Analysis.Images), and every image
//     the ONBUILD triggers of its base images read (CheckOnbuild), must
//     match a repository pattern of allow.from (default none: only
//     scratch and earlier stages). Patterns are those of destinations,
//     placeholders included. A bare host[:port] or "*" means any
//     repository, as before patterns existed; since the gateway pulls with
//     its own credentials, that lets one tenant read another's private
//     images, and Warnings says so;
//   - the runner must be in allow.runners (default [kaniko]).
//
// allow.network gives the rule's builds a network for RUN steps: none
// (loopback only) or egress (outbound, never to the gateway's host or
// link-local addresses). Default: the gateway's runner setting.
//
// A destination pattern is host[:port]/path. The host is a literal, "*"
// (any host) or "**"; in the path, "*" matches within one segment and a
// whole-segment "**" matches any number of segments, including none. A
// repository with an invalid path component (such as "..") never matches.
//
// # Placeholders
//
// {attr} in a destination or an allow.tags entry is replaced by the
// identity's attribute attr. The value is always taken literally, never as
// glob syntax. A missing or empty attribute, or a value that is not a
// valid repository path (for destinations: lowercase components separated
// by "/", no "..") or tag, makes that one pattern unusable for the
// identity; it never becomes empty or broader. Names are plain
// ([A-Za-z_][A-Za-z0-9_]*). deny_tags takes no placeholders, so that no
// identity can escape a deny entry by lacking an attribute.
//
// {A_lc} is attribute A in lowercase and {A_slug} is A as GitLab slugs a
// ref for CI_COMMIT_REF_SLUG, unless the identity has an attribute of
// that very name. So registry.example.com/{project_path_lc}:{ref_slug}
// is what GitLab's $CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG holds for a
// project with capitals in its path and any branch name.
//
// # Registries
//
// Short Docker Hub names (FROM busybox) resolve to index.docker.io, as
// go-containerregistry's name.ParseReference does, and are checked as
// registry index.docker.io. "docker.io" in allow.from or at the start of a
// destination is an alias for it.
//
// # Caches
//
// cache.scope (a key of the rule, beside match and allow) says which
// builds share kaniko's layer and result caches; see CacheScope. Every
// build of a cache can plant what later builds of it use, so a scope must
// not join identities of different trust. Default project-ref-class: one
// project's protected refs share with each other only, its other refs
// with each other; project, namespace and identity widen or narrow that,
// none turns caching off.
//
//	rules:
//	  - name: gitlab-branches
//	    match: {kind: oidc, ref_protected: "false"}
//	    allow: {destinations: ["registry.example.com/{project_path}"]}
//	    cache: {scope: project-ref-class}
//
// # Tenants
//
// tenant (a key of the rule, beside match and allow) says which builds
// count as one against the queue: its per-identity bounds
// (max_queued_per_identity, max_uploading_per_identity,
// max_running_per_identity), its turns, and the rule's max_concurrent. A
// GitLab identity is one project's one ref, so without it every branch
// pushed would be a share of its own. It takes the cache scopes but none;
// default the rule's cache.scope (identity when that is none). See
// Decision.Tenant.
//
//	rules:
//	  - name: gitlab-branches
//	    match: {kind: oidc, ref_protected: "false"}
//	    allow:
//	      destinations: ["registry.example.com/{project_path}"]
//	      limits: {max_concurrent: 2}
//	    tenant: project
//
// # Limits
//
// A decision that allows carries the rule's limits; a limit left out is
// zero, which means the gateway's default applies. max_concurrent bounds
// the builds of the rule's tenant that run at once.
package policy

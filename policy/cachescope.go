package policy

import (
	"encoding/json"

	"github.com/buildgw/buildgw/auth"
)

// CacheScope is a rule's cache.scope: which builds share the layer and
// result caches. A build reads cached layers and results only of builds
// with the same tenant (CacheScope.Tenant), and every build of a tenant
// can write what later builds of that tenant read, so a tenant must never
// join identities of different trust, such as a feature branch and the
// protected branch that releases.
type CacheScope string

// Cache scopes a rule may give.
const (
	// CacheProjectRefClass, the default, shares within one project
	// (project_path and project_id of the issuer) and one ref class:
	// protected refs (ref_protected "true") share with protected refs
	// only, everything else with everything else of the project. An
	// identity without project_path gets a cache of its own
	// (CacheIdentity).
	CacheProjectRefClass CacheScope = "project-ref-class"
	// CacheProject shares within a project, protected refs or not: a
	// feature branch can then plant layers that a release build uses.
	CacheProject CacheScope = "project"
	// CacheNamespace shares within a namespace_path (a GitLab group and
	// all its projects, any ref).
	CacheNamespace CacheScope = "namespace"
	// CacheIdentity shares only among builds of the same identity: the
	// same static token or certificate, or the same OIDC subject (for
	// GitLab, one project's one ref).
	CacheIdentity CacheScope = "identity"
	// CacheNone gives the builds no cache: each runs every step.
	CacheNone CacheScope = "none"
)

func compileCacheScope(s scalar) (CacheScope, error) {
	switch cs := CacheScope(s.Value); cs {
	case "":
		return CacheProjectRefClass, nil
	case CacheProjectRefClass, CacheProject, CacheNamespace, CacheIdentity, CacheNone:
		return cs, nil
	}
	return "", errAt(s.Line, "cache.scope: %q is not one of %s, %s, %s, %s, %s", s.Value,
		CacheProjectRefClass, CacheProject, CacheNamespace, CacheIdentity, CacheNone)
}

// compileTenant compiles a rule's tenant: one of the cache scopes but
// none, by default the rule's cache scope (identity if that is none), so
// that the builds which share a cache also share the limits.
func compileTenant(s scalar, cache CacheScope) (CacheScope, error) {
	switch t := CacheScope(s.Value); t {
	case "":
		if cache == CacheNone {
			return CacheIdentity, nil
		}
		return cache, nil
	case CacheProjectRefClass, CacheProject, CacheNamespace, CacheIdentity:
		return t, nil
	}
	return "", errAt(s.Line, "tenant: %q is not one of %s, %s, %s, %s", s.Value,
		CacheProjectRefClass, CacheProject, CacheNamespace, CacheIdentity)
}

// Tenant names the cache that id's builds share under scope s, "" for no
// cache. Builds share a cache exactly when their tenants are equal. The
// name holds the scope and the issuer and kind of the identity, so that
// rules of different scopes, different issuers, or a static token with
// the attributes of a JWT never meet in one cache. An empty scope is the
// default, CacheProjectRefClass.
func (s CacheScope) Tenant(id auth.Identity) string {
	attr := id.Attributes
	switch s {
	case CacheNone:
		return ""
	case "", CacheProjectRefClass:
		if p := attr["project_path"]; p != "" {
			// Only the exact claim "true" is protected; a missing or
			// odd value is a class of its own.
			return tenantName(CacheProjectRefClass, id, p, attr["project_id"], "ref_protected="+attr["ref_protected"])
		}
	case CacheProject:
		if p := attr["project_path"]; p != "" {
			return tenantName(s, id, p, attr["project_id"])
		}
	case CacheNamespace:
		if ns := attr["namespace_path"]; ns != "" {
			return tenantName(s, id, ns)
		}
	case CacheIdentity:
	default:
		// Compiled rules have no other scope; never share on one.
		return ""
	}
	return tenantName(CacheIdentity, id, id.Name)
}

// tenantName joins the parts as a JSON list: no value can make two
// different lists read the same.
func tenantName(s CacheScope, id auth.Identity, parts ...string) string {
	// Marshalling strings cannot fail.
	b, _ := json.Marshal(append([]string{string(s), string(id.Kind), id.Issuer}, parts...))
	return string(b)
}

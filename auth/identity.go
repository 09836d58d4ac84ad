// Package auth holds who a request comes from: the Identity that every
// authenticator produces and that policy decides on. The authenticators
// live in subpackages: static tokens (auth/token), OIDC JWTs from CI
// (auth/oidc) and client certificates (auth/mtls).
package auth

import (
	"net/http"
	"sort"
)

// Kind says how an identity was proven.
type Kind string

// The ways to authenticate.
const (
	KindToken Kind = "token"
	KindOIDC  Kind = "oidc"
	KindMTLS  Kind = "mtls"
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is unique per caller and owns its builds: the token's name, the
	// OIDC issuer's name plus the token's subject, or the certificate's
	// configured name.
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Issuer is the OIDC issuer URL, for OIDC identities.
	Issuer string `json:"issuer,omitempty"`
	// Attributes are what policy rules match on: configured attributes of a
	// static token or certificate, or the verified claims of a JWT
	// (project_path, namespace_path, ref, ref_type, ref_protected,
	// pipeline_source, user_login, sub, ...), as strings.
	Attributes map[string]string `json:"attributes,omitempty"`
}

// AttributeNames returns the attribute names, sorted.
func (id Identity) AttributeNames() []string {
	names := make([]string, 0, len(id.Attributes))
	for k := range id.Attributes {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Authenticator turns a request's credentials into an Identity. It returns
// ErrNoCredentials when the request carries none of the kind it checks, so
// that several authenticators can be tried in turn, and any other error
// when credentials were present but invalid.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
}

// Error is an authentication failure. Reason is safe to show the caller:
// it never holds the credential itself.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return e.Reason }

var _ error = (*Error)(nil)

// ErrNoCredentials means a request carries no credentials of the kind an
// Authenticator checks.
var ErrNoCredentials = &Error{Reason: "no credentials"}

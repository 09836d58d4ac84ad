// Package authtest holds comparisons the authenticators' tests share.
package authtest

import (
	"errors"
	"maps"

	"github.com/buildgw/buildgw/auth"
)

// SameError reports whether got is the authentication outcome want: both
// nil, both auth.ErrNoCredentials, or *auth.Error with the same reason.
func SameError(got, want error) bool {
	if want == nil || got == nil {
		return got == want
	}
	if errors.Is(want, auth.ErrNoCredentials) {
		return errors.Is(got, auth.ErrNoCredentials)
	}
	var ge, we *auth.Error
	return errors.As(got, &ge) && errors.As(want, &we) && ge.Reason == we.Reason
}

// SameIdentity reports whether a and b are the same identity.
func SameIdentity(a, b auth.Identity) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.Issuer == b.Issuer && maps.Equal(a.Attributes, b.Attributes)
}

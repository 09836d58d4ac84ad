package auth

import (
	"errors"
	"net/http"
)

// Chain tries each authenticator in turn: the first that finds its kind of
// credentials decides. A request with none of them gets ErrNoCredentials.
func Chain(as ...Authenticator) Authenticator { return chain(as) }

type chain []Authenticator

func (c chain) Authenticate(r *http.Request) (Identity, error) {
	for _, a := range c {
		id, err := a.Authenticate(r)
		if errors.Is(err, ErrNoCredentials) {
			continue
		}
		return id, err
	}
	return Identity{}, ErrNoCredentials
}

// Networks is the subset of a network allowlist that Restrict needs.
type Networks interface {
	Allows(remoteAddr string) bool
}

// Restrict accepts what a accepts only from the networks that networks
// returns for the identity (nil: any address), so an identity can be
// used only from where it is expected.
func Restrict(a Authenticator, networks func(Identity) Networks) Authenticator {
	return restricted{a, networks}
}

type restricted struct {
	a        Authenticator
	networks func(Identity) Networks
}

func (r restricted) Authenticate(req *http.Request) (Identity, error) {
	id, err := r.a.Authenticate(req)
	if err != nil {
		return id, err
	}
	if n := r.networks(id); n != nil && !n.Allows(req.RemoteAddr) {
		return Identity{}, &Error{Reason: "identity " + id.Name + " may not be used from this address"}
	}
	return id, nil
}

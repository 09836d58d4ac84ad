// Package netmode names what the RUN steps of a build may reach: the one
// definition of the network modes that the policy (allow.network), the
// gateway's configuration (runners.*.network) and both runners accept.
package netmode

import "fmt"

// Mode is the network of a build's sandbox. The zero Mode is not a mode:
// it stands for "not chosen here", where a default applies (a policy rule
// without allow.network, a request the runner's default decides).
type Mode string

const (
	// None is loopback only.
	None Mode = "none"
	// Egress is outbound connections through slirp4netns, never to the
	// gateway's host (its loopback and its own addresses) or to
	// link-local addresses (169.254.0.0/16, cloud metadata).
	Egress Mode = "egress"
)

// Parse returns the mode s names, and an error naming s for anything but
// "none" and "egress" (the empty string included: callers that allow a
// mode to be left out check for that first).
func Parse(s string) (Mode, error) {
	switch m := Mode(s); m {
	case None, Egress:
		return m, nil
	}
	return "", fmt.Errorf("network %q is neither %q nor %q", s, None, Egress)
}

// Check returns Parse's error for m: nil for None and Egress. It is for
// modes that arrive already typed (configuration decoded from YAML,
// options), which nothing else has checked.
func (m Mode) Check() error {
	_, err := Parse(string(m))
	return err
}

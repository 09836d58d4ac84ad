package sandboxinit

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/egress"
	"github.com/buildgw/buildgw/sandbox"
)

// setupNetwork brings up the sandbox's loopback, waits for the runner to
// give it egress if mode asks for it, and then takes away CAP_NET_ADMIN
// for good, so that no build step can change interfaces, routes or the
// rules that keep it from the host.
//
// Without a mode the sandbox shares the network of whoever started it (a
// benchmark running plain kaniko does); the runner always sets one.
func setupNetwork(mode netmode.Mode) error {
	if mode == "" {
		return nil
	}
	if err := egress.LoopbackUp(); err != nil {
		return fmt.Errorf("bringing up loopback: %w", err)
	}
	if mode == netmode.Egress {
		in := sandbox.InNamespace.File()
		ready := sandbox.NetworkReady.File()
		if _, err := in.Write([]byte{1}); err != nil {
			return fmt.Errorf("signalling the runner: %w", err)
		}
		in.Close()
		b := make([]byte, 1)
		if n, err := ready.Read(b); n != 1 || b[0] != 1 {
			return fmt.Errorf("the runner did not set up the network: %v", err)
		}
		ready.Close()
	}
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_NET_ADMIN, 0, 0, 0); err != nil {
		return fmt.Errorf("dropping CAP_NET_ADMIN: %w", err)
	}
	return nil
}

package kaniko

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/buildgw/buildgw/runners/egress"
)

// slirpGateway is the host as slirp4netns shows it to the sandbox.
const slirpGateway = egress.Gateway

// sandboxEgress is the user-mode network of one sandbox: slirp4netns,
// started once the sandbox's namespaces exist, and the rules in the
// sandbox's network namespace that keep it from the gateway's host (see
// package egress).
type sandboxEgress struct {
	inNS  *os.File // read: the sandbox is in its namespaces
	ready *os.File // write: the network is set up
	// inNSW and readyR are the sandbox's ends, its sandbox.InNamespace
	// and sandbox.NetworkReady.
	inNSW, readyR *os.File
	net           *egress.Network
}

// newEgress makes the handshake pipes.
func newEgress() (*sandboxEgress, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	return &sandboxEgress{inNS: inR, ready: readyW, inNSW: inW, readyR: readyR}, nil
}

// start sets up the network of the sandbox whose unshare process is pid,
// once the sandbox says it is in its namespaces, and lets it go on. The
// sandbox drops CAP_NET_ADMIN before any build step runs, so no step can
// lift the rules.
func (e *sandboxEgress) start(ctx context.Context, r *Runner, pid int) error {
	e.inNSW.Close()
	e.readyR.Close()
	e.inNS.SetReadDeadline(time.Now().Add(time.Minute))
	b := make([]byte, 1)
	if _, err := e.inNS.Read(b); err != nil {
		return fmt.Errorf("waiting for the sandbox's namespaces: %w", err)
	}
	n, err := egress.Start(ctx, egress.Tools{Slirp4netns: r.o.slirp, Nsenter: r.o.nsenter, Iptables: r.o.iptables}, pid, r.o.refuse)
	if err != nil {
		return err
	}
	e.net = n
	if _, err := e.ready.Write([]byte{1}); err != nil {
		return fmt.Errorf("releasing the sandbox: %w", err)
	}
	return nil
}

// stop ends slirp4netns and closes the handshake.
func (e *sandboxEgress) stop() {
	for _, f := range []*os.File{e.inNSW, e.readyR, e.inNS, e.ready} {
		f.Close()
	}
	e.net.Stop()
}

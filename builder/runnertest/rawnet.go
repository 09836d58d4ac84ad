package runnertest

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// CheckRawRefused checks the output of internal/sandboxprobe's rawtcp,
// rawip and sockets runs in a RUN step with egress: no frame of its own
// reached any of targets (name to host:port), marker (what the loopback
// service answers) never appears, every packet and raw socket was refused,
// and the sockets builds need were not. Both runners' network tests use it.
func CheckRawRefused(t *testing.T, out string, targets map[string]string, marker string) {
	t.Helper()
	for name, addr := range targets {
		h, p, _ := net.SplitHostPort(addr)
		want := fmt.Sprintf("rawtcp %s:%s: socket(AF_PACKET): operation not permitted\n", h, p)
		if !strings.Contains(out, want) {
			t.Errorf("raw TCP client to the %s (%s): no %q", name, addr, want)
		}
	}
	if strings.Contains(out, "fetched") || strings.Contains(out, marker) {
		t.Errorf("a RUN step fetched from the host with frames of its own")
	}
	for _, want := range []string{
		"rawip: socket(AF_INET, SOCK_RAW): operation not permitted\n",
		"socket AF_PACKET SOCK_RAW: operation not permitted\n",
		"socket AF_PACKET SOCK_DGRAM: operation not permitted\n",
		"socket AF_PACKET SOCK_PACKET: operation not permitted\n",
		"socket AF_INET SOCK_PACKET: operation not permitted\n",
		"socket AF_INET SOCK_RAW: operation not permitted\n",
		"socket AF_INET SOCK_RAW|SOCK_CLOEXEC: operation not permitted\n",
		"socket AF_INET6 SOCK_RAW: operation not permitted\n",
		"io_uring_setup: operation not permitted\n",
		// What builds need stays.
		"socket AF_INET SOCK_STREAM: allowed\n",
		"socket AF_INET SOCK_DGRAM: allowed\n",
		"socket AF_UNIX SOCK_STREAM: allowed\n",
		"socket AF_NETLINK SOCK_RAW: allowed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("probe: no %q", want)
		}
	}
}

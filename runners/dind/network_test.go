package dind

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testnetns"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/egress"
)

// TestNetwork checks what RUN steps can reach in each network mode. The
// runner (and so the job's daemon's parent and slirp4netns) runs in a
// network namespace made by the test, standing for the gateway's host: a
// service on its loopback and on all its addresses (the gateway's API and
// registry), a "metadata service" on 169.254.169.254, and a veth to a
// second namespace, standing for the outside world, with a server that
// only egress reaches. The probe (the kaniko runner's, a static binary)
// also tries to change the network, which no RUN step may.
func TestNetwork(t *testing.T) {
	requireDocker(t)
	for _, tool := range []string{"ip", "slirp4netns", "iptables-restore", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (scripts/setup installs it): %v", tool, err)
		}
	}
	probe := testenv.Build(t, "./runners/kaniko/testdata/netprobe", "netprobe")
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)

	w := testnetns.NewWorld(t, "10.214.0", egress.Gateway)
	host, targets, urls := w.Host, w.Targets, w.URLs()
	dockerfile := "ARG BASE\nFROM ${BASE}\nARG TARGETS\nCOPY netprobe /netprobe\nRUN /netprobe $TARGETS > /net.txt; cat /net.txt\n"
	pb, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		option  netmode.Mode // the runner's network (WithNetwork), "" for the default
		request netmode.Mode // Request.Network
		refuse  []string
		egress  bool // egress mode
		outside bool // the outside server reached
	}{
		{"none (default)", "", "", nil, false, false},
		{"egress", netmode.Egress, "", nil, true, true},
		{"none by request", netmode.Egress, netmode.None, nil, false, false},
		{"egress by request", netmode.None, netmode.Egress, nil, true, true},
		// The operator's own refusals: the far namespace's network,
		// standing for an internal one.
		{"egress refusing the outside network", netmode.Egress, "", []string{"10.214.0.0/24"}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []Option
			if c.option != "" {
				opts = append(opts, WithNetwork(c.option))
			}
			if c.refuse != nil {
				opts = append(opts, WithEgressRefuse(c.refuse...))
			}
			r, err := New(append(engine(t), opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, reg, map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": base, "TARGETS": strings.Join(urls, " ")})
			if err := os.WriteFile(filepath.Join(req.ContextDir, "netprobe"), pb, 0o755); err != nil {
				t.Fatal(err)
			}
			req.Network = c.request
			var log strings.Builder
			var body string
			var berr error
			host.Do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
				defer cancel()
				img, err := r.Build(ctx, req, &log)
				if berr = err; err == nil {
					body = imageFiles(t, img)["net.txt"]
				}
			})
			if berr != nil {
				t.Fatalf("Build: %v\n%s", berr, log.String())
			}
			mode := netmode.None
			if c.egress {
				mode = netmode.Egress
			}
			if !strings.Contains(log.String(), "network "+string(mode)+")") {
				t.Errorf("log does not name network %s:\n%s", mode, log.String())
			}
			if !strings.Contains(body, "netadmin: operation not permitted\n") {
				t.Errorf("a RUN step could change its network:\n%s", body)
			}
			if n := strings.Count(body, "\n"); n != len(targets)+1 {
				t.Errorf("%d results, want %d:\n%s", n, len(targets)+1, body)
			}
			for name, addr := range targets {
				reached := strings.Contains(body, "reached http://"+addr+"/ ")
				want := c.outside && name == testnetns.Outside
				if reached != want {
					t.Errorf("%s (%s) reached = %v, want %v\n%s", name, addr, reached, want, body)
				}
			}
			if c.outside && !strings.Contains(body, "reached http://"+targets[testnetns.Outside]+"/ outside") {
				t.Errorf("the outside server's answer is missing:\n%s", body)
			}
			if left := referencing(filepath.Join(req.Workspace, "dind")); len(left) > 0 {
				t.Errorf("processes left: %v", left)
			}
		})
	}
}

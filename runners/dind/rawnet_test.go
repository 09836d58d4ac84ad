package dind

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildgw/buildgw/builder/runnertest"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testnetns"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/runners/egress"
)

// TestRawNetwork checks that RUN steps with egress cannot go past the
// daemon's IP-layer rules with frames of their own (its containers hold
// CAP_NET_RAW, Docker's default): the probe's TCP client over an
// AF_PACKET socket must fetch nothing from a service on the host's
// loopback, the host's own address (standing for the gateway's port),
// slirp4netns's door to the host or the metadata address, and every
// socket that could send hand-made packets must be refused while ordinary
// ones work.
func TestRawNetwork(t *testing.T) {
	requireDocker(t)
	probe := testenv.Build(t, "./internal/sandboxprobe", "sandboxprobe")
	reg := testenv.Registry(t)
	base := testenv.Busybox(t, reg)
	w := testnetns.NewWorld(t, "10.216.0", egress.Gateway)
	marker := "loopback-only-" + fmt.Sprint(time.Now().UnixNano())
	loop := w.Host.Serve(t, "127.0.0.1:0", marker)
	targets := map[string]string{
		"loopback-only service":   loop,
		"gateway's port":          w.Targets["host's own address"],
		"metadata service":        w.Targets["metadata service"],
		"slirp4netns's host door": w.Targets["host through slirp"],
	}
	var steps []string
	for _, addr := range targets {
		h, p, _ := net.SplitHostPort(addr)
		steps = append(steps, fmt.Sprintf("/p rawtcp %s %s /", h, p))
	}
	dockerfile := "ARG BASE\nFROM ${BASE}\nCOPY sandboxprobe /p\n" +
		"RUN chmod 755 /p && (/p sockets; /p rawip; /p id; " + strings.Join(steps, "; ") + ") > /probe.txt 2>&1; cat /probe.txt\n"
	r, err := New(append(engine(t), WithNetwork(netmode.Egress))...)
	if err != nil {
		t.Fatal(err)
	}
	req := newRequest(t, reg, map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": base})
	pb, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(req.ContextDir, "sandboxprobe"), pb, 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	var body string
	var berr error
	w.Host.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
		defer cancel()
		img, err := r.Build(ctx, req, &log)
		if berr = err; err == nil {
			body = imageFiles(t, img)["probe.txt"]
		}
	})
	if berr != nil {
		t.Fatalf("Build: %v\n%s", berr, log.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("probe's output:\n%s", body)
		}
	})
	runnertest.CheckRawRefused(t, body, targets, marker)
}

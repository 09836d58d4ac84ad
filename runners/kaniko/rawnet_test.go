package kaniko

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/builder/runnertest"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testnetns"
	"github.com/buildgw/buildgw/netmode"
)

// TestRawNetwork checks that RUN steps with egress cannot go past the
// sandbox's IP-layer rules with frames of their own: the probe's TCP
// client over an AF_PACKET socket must fetch nothing from a service on
// the host's loopback, the host's own address (standing for the gateway's
// port), slirp4netns's door to the host or the metadata address, and
// every socket that could send hand-made packets must be refused while
// ordinary ones work. A setuid program keeps working (the filter needs no
// no_new_privs) but gets no CAP_NET_RAW either.
func TestRawNetwork(t *testing.T) {
	testenv.RequireSandbox(t)
	if os.Geteuid() != 0 {
		t.Skip("making network namespaces needs root")
	}
	exe := testenv.Executor(t)
	probe := testenv.Build(t, "./internal/sandboxprobe", "sandboxprobe")
	regSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(regSrv.Close)
	regHost := regSrv.Listener.Addr().String()
	base := testenv.Busybox(t, regHost)
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := testnetns.NewWorld(t, "10.215.0", slirpGateway)
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
	dockerfile := `ARG BASE
FROM ${BASE}
COPY sandboxprobe /p
RUN chmod 755 /p && cp /p /p-suid && chmod 4755 /p-suid && mkdir -m 777 /out
RUN (/p sockets; /p rawip; ` + strings.Join(steps, "; ") + `) > /out/root.txt 2>&1; cat /out/root.txt
USER 65534
RUN /p-suid id > /out/suid.txt 2>&1; cat /out/suid.txt
`
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	req := netRequest(t, r, dockerfile, "", map[string]string{"BASE": base}, regHost)
	pb, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	p := req.ContextDir + "/sandboxprobe"
	if err := os.WriteFile(p, pb, 0o644); err != nil {
		t.Fatal(err)
	}
	if uid, gid, differs := r.Owner(); differs {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	req.Network = netmode.Egress
	if req.BaseImages, err = store.Prepare(context.Background(), req, io.Discard); err != nil {
		t.Fatal(err)
	}
	var logBuf strings.Builder
	var root, suid string
	var berr error
	w.Host.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
		defer cancel()
		im, err := r.Build(ctx, req, &logBuf)
		if berr = err; err == nil {
			if root, berr = fileOf(im, "out/root.txt"); berr == nil {
				suid, berr = fileOf(im, "out/suid.txt")
			}
		}
	})
	if berr != nil {
		t.Fatalf("Build: %v\nlog:\n%s", berr, logBuf.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("probe's output:\n%s%s", root, suid)
		}
	})

	runnertest.CheckRawRefused(t, root, targets, marker)
	// Setuid works (no no_new_privs), and still gives no CAP_NET_RAW.
	if want := "id: uid=65534 euid=0 net_raw: effective=false bounding=false no_new_privs=0\n"; suid != want {
		t.Errorf("setuid probe as uid 65534 = %q, want %q", suid, want)
	}
}

package kaniko

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/internal/testnetns"
	"github.com/buildgw/buildgw/netmode"
)

// TestNetwork checks what RUN steps can reach in each network mode. The
// gateway side of the sandbox (the runner, slirp4netns) runs in a network
// namespace made by the test, standing for the gateway's host: a service
// on its loopback and on all its addresses, a "metadata service" on
// 169.254.169.254, and a veth to a second namespace, standing for the
// outside world, with a server that only egress reaches.
func TestNetwork(t *testing.T) {
	testenv.RequireSandbox(t)
	if os.Geteuid() != 0 {
		t.Skip("making network namespaces and veth pairs needs root")
	}
	for _, tool := range []string{"ip", "slirp4netns", "iptables-restore", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (scripts/setup installs it): %v", tool, err)
		}
	}
	exe := testenv.Executor(t)
	probe := testenv.Build(t, "./runners/kaniko/testdata/netprobe", "netprobe")
	regSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(regSrv.Close)
	regHost := regSrv.Listener.Addr().String()
	base := testenv.Busybox(t, regHost)
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	w := testnetns.NewWorld(t, "10.213.0", slirpGateway)
	host, targets, urls := w.Host, w.Targets, w.URLs()
	dockerfile := `ARG BASE
FROM ${BASE}
ARG TARGETS
COPY netprobe /netprobe
RUN /netprobe $TARGETS > /net.txt; cat /net.txt
`
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	// The operator's own refusals: here the far namespace's network,
	// standing for an internal one.
	refusing, err := New(WithExecutor(exe), WithEgressRefuse("10.213.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, tc := range []struct {
		name    string
		mode    netmode.Mode
		r       *Runner
		outside bool // reached in this mode
	}{
		{"none", netmode.None, r, false},
		{"egress", netmode.Egress, r, true},
		{"egress refusing the outside network", netmode.Egress, refusing, false},
	} {
		wg.Add(1)
		mode, r := tc.mode, tc.r
		t.Run(tc.name, func(t *testing.T) {
			defer wg.Done()
			req := netRequest(t, r, dockerfile, probe, map[string]string{"BASE": base, "TARGETS": strings.Join(urls, " ")}, regHost)
			req.Network = mode
			b, err := store.Prepare(context.Background(), req, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			req.BaseImages = b
			var logBuf strings.Builder
			var berr error
			var body string
			host.Do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
				defer cancel()
				im, err := r.Build(ctx, req, &logBuf)
				if berr = err; err == nil {
					body, berr = fileOf(im, "net.txt")
				}
			})
			if berr != nil {
				t.Fatalf("Build with network %s: %v\nlog:\n%s", mode, berr, logBuf.String())
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("build log:\n%s", logBuf.String())
				}
			})
			// No step may change the network it was given.
			if !strings.Contains(body, "netadmin: operation not permitted\n") {
				t.Errorf("network %s: a RUN step could change the sandbox's network:\n%s", mode, body)
			}
			if n := strings.Count(body, "\n"); n != len(targets)+1 {
				t.Errorf("network %s: %d results, want %d:\n%s", mode, n, len(targets), body)
			}
			for name, addr := range targets {
				reached := strings.Contains(body, "reached http://"+addr+"/ ")
				want := tc.outside && name == testnetns.Outside
				if reached != want {
					t.Errorf("network %s: %s (%s) reached = %v, want %v\n%s", mode, name, addr, reached, want, body)
				}
			}
			if tc.outside && !strings.Contains(body, "reached http://"+targets[testnetns.Outside]+"/ outside") {
				t.Errorf("network egress: the outside server's answer is missing:\n%s", body)
			}
		})
	}
	wg.Wait()
}

// netRequest lays out a workspace for one build, as jobs.Manager does,
// with the probe binary (if any) in the context as netprobe.
func netRequest(t *testing.T, r *Runner, dockerfile, probe string, args map[string]string, insecure string) *builder.Request {
	t.Helper()
	parent, err := os.MkdirTemp("", "buildgw-nettest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o711)
	ws := filepath.Join(parent, "ws")
	ctxDir, out := filepath.Join(ws, "context"), filepath.Join(ws, "out")
	for _, d := range []string{ws, ctxDir, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(ws, 0o700)
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	owned := []string{ws, ctxDir, out, filepath.Join(ctxDir, "Dockerfile")}
	if probe != "" {
		pb, err := os.ReadFile(probe)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "netprobe"), pb, 0o755); err != nil {
			t.Fatal(err)
		}
		owned = append(owned, filepath.Join(ctxDir, "netprobe"))
	}
	if uid, gid, differs := r.Owner(); differs {
		for _, p := range owned {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return &builder.Request{ID: "nettest", Workspace: ws, ContextDir: ctxDir, Dockerfile: "Dockerfile", Analysis: analyze(t, dockerfile, args, ""),
		BuildArgs: args, OutputDir: out, InsecureRegistries: []string{insecure}}
}

// fileOf returns the content of the file at p (no leading slash) in img.
func fileOf(img v1.Image, p string) (string, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s not in the image: %w", p, err)
		}
		if strings.TrimPrefix(h.Name, "/") == p {
			b, err := io.ReadAll(tr)
			return string(b), err
		}
	}
}

// TestNoPull checks that a sandbox never pulls: a base image the gateway
// did not fetch fails the build, naming the image, although its registry
// is on the host's loopback.
func TestNoPull(t *testing.T) {
	testenv.RequireSandbox(t)
	exe := testenv.Executor(t)
	regHost := testenv.Registry(t)
	base := testenv.Busybox(t, regHost)
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	req := netRequest(t, r, "ARG BASE\nFROM ${BASE}\nRUN true\n", "", map[string]string{"BASE": base}, regHost)
	var logBuf strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(3*time.Minute))
	defer cancel()
	if img, err := r.Build(ctx, req, &logBuf); err == nil {
		t.Fatalf("Build without base images = %v, nil; want an error", img)
	}
	if want := "no images were handed to this build"; !strings.Contains(logBuf.String(), want) {
		t.Errorf("Build without base images: log lacks %q:\n%s", want, logBuf.String())
	}
}

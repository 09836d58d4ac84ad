package dind

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/baseimage"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/internal/testenv"
)

// countingProxy forwards TCP connections on a loopback port to target
// and counts them.
type countingProxy struct {
	addr  string
	conns atomic.Int64
}

func startProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{addr: ln.Addr().String()}
	var mu sync.Mutex
	var open []net.Conn
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
		// Clients keep idle connections: close them, both ends.
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			u, err := net.Dial("tcp4", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, u)
			mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

// TestBaseImagesWithoutCredentials builds FROM a private registry (TLS,
// htpasswd), by tag and by digest, with the base fetched by the gateway's
// store with the read-only pull account, and no credential given to the
// build: the base is loaded into the job's daemon, which never connects
// to the registry (all its traffic passes a counting proxy), and neither
// the log nor the image holds the password. An image the gateway did not
// fetch cannot be pulled by the daemon.
func TestBaseImagesWithoutCredentials(t *testing.T) {
	r := requireDocker(t)
	reg := testenv.StartDockerRegistry(t, true)
	proxy := startProxy(t, reg.Host)
	img, err := baseimage.Busybox(testenv.BusyboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	base := proxy.addr + "/private/busybox:latest"
	tag, err := name.NewTag(base)
	if err != nil {
		t.Fatal(err)
	}
	tr := reg.HTTPClient().Transport
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}), remote.WithTransport(tr)); err != nil {
		t.Fatalf("pushing the private base: %v", err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	pull := []basestore.Option{
		basestore.WithRemoteOptions(func(name.Registry) []remote.Option {
			return []remote.Option{remote.WithAuth(&authn.Basic{Username: reg.Puller, Password: reg.PullerPassword})}
		}),
		basestore.WithTransport(func(name.Registry) http.RoundTripper {
			// A transport of its own, so that each fetch connects anew.
			return reg.HTTPClient().Transport.(*http.Transport).Clone()
		}),
	}
	dockerfile := "ARG BASE\nFROM ${BASE}\nRUN ls -a /root /.docker 2>&1; env; echo built-ok > /ok\n"

	for _, c := range []struct{ name, base string }{
		{"by tag", base},
		{"by digest", proxy.addr + "/private/busybox@" + digest.String()},
		{"by tag and digest", base + "@" + digest.String()},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := newRequestNoBases(t, "127.0.0.1:1", map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": c.base})
			before := proxy.conns.Load()
			prepareBases(t, req, pull...)
			if proxy.conns.Load() == before {
				t.Fatalf("the store fetched %s without connecting to the registry", c.base)
			}
			before = proxy.conns.Load()
			var log strings.Builder
			built, err := r.Build(context.Background(), req, &log)
			if err != nil {
				t.Fatalf("Build FROM %s: %v\n%s", c.base, err, log.String())
			}
			if n := proxy.conns.Load() - before; n != 0 {
				t.Errorf("the build connected to the registry %d times, want 0", n)
			}
			if !strings.Contains(log.String(), "dind: 1 base images loaded in") {
				t.Errorf("log does not show the base image loaded:\n%s", log.String())
			}
			if strings.Contains(log.String(), "Pulling from") {
				t.Errorf("the daemon pulled:\n%s", log.String())
			}
			for _, secret := range []string{reg.PullerPassword, reg.Password} {
				if strings.Contains(log.String(), secret) {
					t.Errorf("log holds a registry password:\n%s", log.String())
				}
				for p, f := range imageFiles(t, built) {
					if strings.Contains(f, secret) {
						t.Errorf("image file %s holds a registry password", p)
					}
				}
			}
			if files := imageFiles(t, built); files["ok"] != "built-ok\n" || files["bin/busybox"] == "" {
				t.Errorf("image lacks the RUN step's file or the base's busybox: ok=%q", files["ok"])
			}
			cfg, err := os.ReadFile(filepath.Join(req.Workspace, "dind", clientDir, "config.json"))
			if err != nil || strings.TrimSpace(string(cfg)) != "{}" {
				t.Errorf("the docker CLI's configuration = %q (%v), want {}", cfg, err)
			}
			want, _ := img.Layers()
			got, _ := built.Layers()
			if len(got) != len(want)+1 {
				t.Errorf("built image has %d layers, want the base's %d and one", len(got), len(want))
			}
		})
	}

	t.Run("not fetched", func(t *testing.T) {
		req := newRequestNoBases(t, "127.0.0.1:1", map[string]string{"Dockerfile": dockerfile}, map[string]string{"BASE": base})
		before := proxy.conns.Load()
		var log strings.Builder
		if _, err := r.Build(context.Background(), req, &log); err == nil {
			t.Fatalf("Build FROM a base the gateway did not fetch succeeded:\n%s", log.String())
		}
		if n := proxy.conns.Load() - before; n != 0 {
			t.Errorf("the daemon connected to the registry %d times, want 0", n)
		}
		if left := referencing(filepath.Join(req.Workspace, "dind")); len(left) > 0 {
			t.Errorf("failed build left processes of its daemon: %v", left)
		}
	})
}

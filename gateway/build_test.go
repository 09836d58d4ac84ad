package gateway_test

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestNewConfigErrors: a configuration that names a file that does not
// load, or settings a component refuses, fails New with an error naming
// the key, every such problem at once, before New touches the state
// directory.
func TestNewConfigErrors(t *testing.T) {
	testenv.RequireSandbox(t)
	tests := []struct {
		name   string
		change func(t *testing.T, c *gateway.Config)
		want   []string
	}{
		{"bad policy", func(t *testing.T, c *gateway.Config) { writeFile(t, c.PolicyFile, "rules: [\n") }, []string{"policy_file"}},
		{"bad token hash", func(t *testing.T, c *gateway.Config) { c.Tokens[0].SHA256 = "nothex" }, []string{"hex-encoded sha256"}},
		{"duplicate token", func(t *testing.T, c *gateway.Config) { c.Tokens = append(c.Tokens, c.Tokens[0]) }, []string{"used twice"}},
		{"bad token network", func(t *testing.T, c *gateway.Config) { c.Tokens[0].AllowNetworks = []string{"not-a-net"} }, []string{"not-a-net"}},
		{"hmac oidc", func(t *testing.T, c *gateway.Config) {
			c.OIDCIssuers = []gateway.OIDCIssuer{{Name: "gl", URL: "http://127.0.0.1:1", Audiences: []string{"x"}, Algorithms: []string{"HS256"}}}
		}, []string{"HS256"}},
		{"missing password file", func(t *testing.T, c *gateway.Config) {
			c.Registries = map[string]gateway.Registry{"r.example.com": {Username: "u", PasswordFile: "/nonexistent/pw"}}
		}, []string{"/nonexistent/pw"}},
		{"missing TLS cert", func(t *testing.T, c *gateway.Config) {
			c.TLS = gateway.TLS{CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k"}
		}, []string{"tls", "/nonexistent/c"}},
		{"missing docker config", func(t *testing.T, c *gateway.Config) { c.DockerConfig = "/nonexistent/config.json" }, []string{"docker_config"}},
		{"bad allow_networks", func(t *testing.T, c *gateway.Config) { c.AllowNetworks = []string{"intranet"} }, []string{"allow_networks", "intranet"}},
		{"downloads dir not a directory", func(t *testing.T, c *gateway.Config) { c.DownloadsDir = c.PolicyFile }, []string{"downloads_dir"}},
		{"all at once", func(t *testing.T, c *gateway.Config) {
			writeFile(t, c.PolicyFile, "rules: [\n")
			c.Tokens[0].SHA256 = "nothex"
			c.AllowNetworks = []string{"intranet"}
		}, []string{"policy_file", "hex-encoded sha256", "allow_networks"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "bgw_test_cfg", allPolicy)
			tc.change(t, &cfg)
			g, err := gateway.New(cfg, discard())
			if err == nil {
				serve(t, g)
				t.Fatalf("gateway.New(%s) = a gateway, want an error", tc.name)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("gateway.New(%s) = %q, want it to name %q", tc.name, err, w)
				}
			}
			if ents, _ := os.ReadDir(cfg.StateDir); len(ents) > 0 {
				t.Errorf("state directory after gateway.New(%s) failed holds %v, want it untouched", tc.name, ents)
			}
		})
	}
}

// TestNewUnwinds: whichever step of New fails, what the steps before it
// made is undone: no file under the state directory and no audit log is
// left open (the state directory's lock, bbolt's lock on jobs.db),
// nothing is left mounted there, and a gateway started next on the same
// state directory starts at once.
func TestNewUnwinds(t *testing.T) {
	testenv.RequireSandbox(t)
	tests := []struct {
		name string
		// breaks makes one step of New fail; the gateway started next
		// runs on the Config as it was before.
		breaks func(t *testing.T, c *gateway.Config)
		want   string
	}{
		{"audit log", func(t *testing.T, c *gateway.Config) {
			c.Audit.File = filepath.Join(t.TempDir(), "missing", "audit.log")
		}, "audit"},
		{"kaniko runner", func(t *testing.T, c *gateway.Config) { c.Runners.Kaniko.Executor = "/nonexistent/kaniko-executor" }, "executor"},
		{"dind storage driver", func(t *testing.T, c *gateway.Config) { c.Runners.Dind.StorageDriver = "aufs" }, "runners.dind"},
		{"dind tmpfs", func(t *testing.T, c *gateway.Config) { c.Runners.Dind.TmpfsBytes = 1024 }, "tmpfs size"},
		{"base image store", func(t *testing.T, c *gateway.Config) {
			writeFile(t, filepath.Join(c.StateDir, "base-images"), "not a directory")
		}, "base image store"},
		{"job manager", func(t *testing.T, c *gateway.Config) {
			writeFile(t, filepath.Join(c.StateDir, "logs"), "not a directory")
		}, "logs"},
		{"listener", func(t *testing.T, c *gateway.Config) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			c.Listen = ln.Addr().String()
		}, "listening"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "bgw_test_unwind", allPolicy)
			cfg.Audit.File = filepath.Join(t.TempDir(), "audit.log")
			// The files made to break a step are not a used state
			// directory's.
			cfg.AcceptEmptyStore = true
			broken := cfg
			tc.breaks(t, &broken)
			g, err := gateway.New(broken, discard())
			if err == nil {
				serve(t, g)
				t.Fatalf("gateway.New with a broken %s = a gateway, want an error", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("gateway.New with a broken %s = %q, want it to name %q", tc.name, err, tc.want)
			}
			if open := openFiles(t, cfg.StateDir, cfg.Audit.File); len(open) > 0 {
				t.Errorf("after gateway.New with a broken %s failed, still open: %q", tc.name, open)
			}
			if m := mountsUnder(t, cfg.StateDir); len(m) > 0 {
				t.Errorf("after gateway.New with a broken %s failed, still mounted: %q", tc.name, m)
			}

			os.Remove(filepath.Join(cfg.StateDir, "base-images"))
			os.Remove(filepath.Join(cfg.StateDir, "logs"))
			g, err = gateway.New(cfg, discard())
			if err != nil {
				t.Fatalf("gateway.New after one with a broken %s failed = %v, want a gateway", tc.name, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := g.Serve(ctx); err != nil {
				t.Errorf("Serve = %v", err)
			}
			// Serve unwinds the same way when the gateway stops.
			if open := openFiles(t, cfg.StateDir, cfg.Audit.File); len(open) > 0 {
				t.Errorf("after Serve returned, still open: %q", open)
			}
		})
	}
}

// TestConfigLoadedOnce: starting a gateway from its config file (buildgw
// serve: LoadConfig, then New) reads each file the configuration names
// once.
func TestConfigLoadedOnce(t *testing.T) {
	testenv.RequireSandbox(t)
	cfg := testConfig(t, "bgw_test_once", allPolicy)
	dir := t.TempDir()
	pem, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	opens := map[string]func() int{}
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		opens[name] = opensOf(t, p)
		return p
	}
	cfg.PolicyFile = file("policy.yaml", allPolicy)
	cfg.DockerConfig = file("docker.json", `{"auths": {}}`)
	cfg.Registries = map[string]gateway.Registry{"127.0.0.1:1": {Username: "pusher", PasswordFile: file("password", "secret\n")}}
	cfg.OIDCIssuers = []gateway.OIDCIssuer{{Name: "ci", URL: "http://127.0.0.1:1", Audiences: []string{"buildgw"}, CAFile: file("oidc-ca.pem", string(pem))}}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "buildgw.yaml")
	writeFile(t, cfgFile, string(b))

	loaded, err := gateway.LoadConfig(cfgFile)
	if err != nil {
		t.Fatalf("LoadConfig = %v", err)
	}
	g, err := gateway.New(loaded, discard())
	if err != nil {
		t.Fatalf("gateway.New = %v", err)
	}
	for name, n := range opens {
		if got := n(); got != 1 {
			t.Errorf("%s opened %d times by LoadConfig and New, want once", name, got)
		}
	}
	serve(t, g)
}

// opensOf counts how often path is opened from now on (through inotify,
// which reports every open).
func opensOf(t *testing.T, path string) func() int {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// Closes between the opens keep inotify from merging two opens in a
	// row into one event.
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN|unix.IN_CLOSE); err != nil {
		t.Fatal(err)
	}
	n := 0
	buf := make([]byte, 64<<10)
	return func() int {
		for {
			m, err := unix.Read(fd, buf)
			if err != nil || m <= 0 {
				return n
			}
			// struct inotify_event: wd, mask, cookie, len, name[len].
			for off := 0; off+unix.SizeofInotifyEvent <= m; {
				if binary.NativeEndian.Uint32(buf[off+4:])&unix.IN_OPEN != 0 {
					n++
				}
				off += unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
			}
		}
	}
}

// openFiles lists the files this process holds open under dir or at one
// of paths.
func openFiles(t *testing.T, dir string, paths ...string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, fd := range fds {
		p, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue
		}
		p = strings.TrimSuffix(p, " (deleted)")
		if strings.HasPrefix(p, dir+"/") || p == dir {
			open = append(open, p)
		}
		for _, q := range paths {
			if p == q {
				open = append(open, p)
			}
		}
	}
	return open
}

// mountsUnder lists the mount points under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, l := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint ...
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	return points
}

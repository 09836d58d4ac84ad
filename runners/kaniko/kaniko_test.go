package kaniko

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/runnertest"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/sandbox"
)

var _ runnertest.Owner = (*Runner)(nil)

// TestConformance runs the runner suite against the real rootless runner:
// the executor built from this module, unshare, and (as root) the sandbox
// user.
func TestConformance(t *testing.T) {
	testenv.RequireSandbox(t)
	exe := testenv.Executor(t)
	// The gateway fetches base images; the sandbox never reaches the
	// suite's registry itself.
	store, err := basestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	runnertest.Run(t, func(t *testing.T) builder.Runner {
		r, err := New(WithExecutor(exe))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if err := r.Available(context.Background()); err != nil {
			t.Fatalf("Available: %v", err)
		}
		return r
	}, runnertest.WithBaseImages(store), runnertest.WithSandboxOutput(sandbox.Output), runnertest.WithHostPaths(exe))
}

func TestKanikoArgs(t *testing.T) {
	base := []string{
		"--context=dir:///workspace",
		"--dockerfile=/workspace/Dockerfile",
		"--no-push",
		"--oci-layout-path=/kaniko/out",
		"--force",
		"--log-format=text",
		"--log-timestamp=false",
	}
	with := func(dockerfile string, extra ...string) []string {
		args := slices.Clone(base)
		args[1] = "--dockerfile=" + dockerfile
		return append(args, extra...)
	}
	for _, tc := range []struct {
		name  string
		req   builder.Request
		flags []string
		want  []string
	}{{
		name: "minimal",
		req:  builder.Request{Dockerfile: "Dockerfile"},
		want: base,
	}, {
		name: "dockerfile in a subdirectory",
		req:  builder.Request{Dockerfile: "build/docker/Dockerfile.prod"},
		want: with("/workspace/build/docker/Dockerfile.prod"),
	}, {
		// Sorted, so that the same request always makes the same command
		// line (and log).
		name: "build args and labels sorted",
		req: builder.Request{
			Dockerfile: "Dockerfile",
			BuildArgs:  map[string]string{"B": "2", "A": "1", "C": "x=y z"},
			Labels:     map[string]string{"org.b": "b", "org.a": "a"},
		},
		want: with("/workspace/Dockerfile",
			"--build-arg=A=1", "--build-arg=B=2", "--build-arg=C=x=y z",
			"--label=org.a=a", "--label=org.b=b"),
	}, {
		name: "empty values kept",
		req: builder.Request{
			Dockerfile: "Dockerfile",
			BuildArgs:  map[string]string{"EMPTY": ""},
			Labels:     map[string]string{"empty": ""},
		},
		want: with("/workspace/Dockerfile", "--build-arg=EMPTY=", "--label=empty="),
	}, {
		name: "target and insecure registries",
		req: builder.Request{
			Dockerfile:         "Dockerfile",
			Target:             "builder",
			InsecureRegistries: []string{"127.0.0.1:5000", "registry.local"},
		},
		want: with("/workspace/Dockerfile",
			"--target=builder", "--insecure-registry=127.0.0.1:5000", "--insecure-registry=registry.local"),
	}, {
		// Tuning flags come last, after everything the request sets.
		name:  "extra flags last",
		req:   builder.Request{Dockerfile: "Dockerfile", Target: "t"},
		flags: []string{"--snapshot-mode=redo", "--single-snapshot"},
		want:  with("/workspace/Dockerfile", "--target=t", "--snapshot-mode=redo", "--single-snapshot"),
	}, {
		// Host paths never reach kaniko: it only sees the sandbox's.
		name: "host paths not passed",
		req: builder.Request{
			Dockerfile: "Dockerfile",
			Workspace:  "/var/lib/buildgw/jobs/x",
			ContextDir: "/var/lib/buildgw/jobs/x/context",
			OutputDir:  "/var/lib/buildgw/jobs/x/out",
		},
		want: base,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Runner{o: options{flags: tc.flags}}
			req := tc.req
			if got := r.kanikoArgs(&req); !slices.Equal(got, tc.want) {
				t.Errorf("kanikoArgs(%+v) =\n  %q\nwant\n  %q", tc.req, got, tc.want)
			}
		})
	}
}

// fakeExecutor makes a file New accepts as the executor.
// fakeExecutor is a statically linked executable that is not the
// executor, for checks that never start it.
func fakeExecutor(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(testenv.BusyboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "executor")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"no executor", nil, "no executor configured"},
		{"missing executor", []Option{WithExecutor("/nonexistent/kaniko-executor")}, "not found"},
		{"unknown network", []Option{WithExecutor(fakeExecutor(t)), WithNetwork("host")}, `network "host"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if os.Geteuid() != 0 {
		return
	}
	// As root, the sandbox user must exist and must not be root itself.
	for _, tc := range []struct {
		user, want string
	}{
		{"buildgw-no-such-user", "looking up sandbox user"},
		{"root", "must not be root"},
	} {
		t.Run("user "+tc.user, func(t *testing.T) {
			_, err := New(WithExecutor(fakeExecutor(t)), WithUser(tc.user))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(WithUser(%q)) = %v, want an error containing %q", tc.user, err, tc.want)
			}
		})
	}
}

// TestBuildUnknownNetwork: a request whose network is neither none nor
// egress (one that reached the runner past the policy) is refused before
// any sandbox starts.
func TestBuildUnknownNetwork(t *testing.T) {
	r, err := New(WithExecutor(fakeExecutor(t)))
	if err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	req := &builder.Request{ID: "net", Workspace: ws, ContextDir: filepath.Join(ws, "context"), OutputDir: filepath.Join(ws, "out"), Dockerfile: "Dockerfile", Network: "host"}
	var log strings.Builder
	if _, err := r.Build(context.Background(), req, &log); err == nil || !strings.Contains(err.Error(), `network "host"`) {
		t.Errorf("Build(Network %q) = %v, want an error naming the network; log:\n%s", req.Network, err, log.String())
	}
}

func TestOwner(t *testing.T) {
	testenv.RequireSandbox(t)
	r, err := New(WithExecutor(fakeExecutor(t)))
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, differs := r.Owner()
	if os.Geteuid() != 0 {
		if differs || uid != os.Getuid() || gid != os.Getgid() {
			t.Errorf("Owner() = %d, %d, %v; want %d, %d, false", uid, gid, differs, os.Getuid(), os.Getgid())
		}
		return
	}
	u, err := user.Lookup(DefaultUser)
	if err != nil {
		t.Fatal(err)
	}
	wantUID, _ := strconv.Atoi(u.Uid)
	wantGID, _ := strconv.Atoi(u.Gid)
	if !differs || uid != wantUID || gid != wantGID {
		t.Errorf("Owner() = %d, %d, %v; want %d, %d, true", uid, gid, differs, wantUID, wantGID)
	}
}

func TestAvailable(t *testing.T) {
	testenv.RequireSandbox(t)
	ctx := context.Background()

	t.Run("ok", func(t *testing.T) {
		r, err := New(WithExecutor(fakeExecutor(t)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err != nil {
			t.Errorf("Available() = %v, want nil", err)
		}
	})
	t.Run("real executor", func(t *testing.T) {
		r, err := New(WithExecutor(testenv.Executor(t)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err != nil {
			t.Errorf("Available() with the executor built by scripts/setup = %v, want nil", err)
		}
	})
	t.Run("dynamically linked executor", func(t *testing.T) {
		// What a plain go build of the executor gives with cgo on: it
		// cannot start inside the sandbox, which has no dynamic loader.
		exe := cgoBinary(t)
		r, err := New(WithExecutor(exe))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("Available() with a dynamically linked executor = %v, want an error saying so and naming CGO_ENABLED=0", err)
		}
	})
	t.Run("executor not ELF", func(t *testing.T) {
		exe := filepath.Join(t.TempDir(), "executor")
		if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		r, err := New(WithExecutor(exe))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), "not an ELF executable") {
			t.Errorf("Available() with a shell script as executor = %v, want an error saying it is not an ELF executable", err)
		}
	})
	t.Run("executor removed", func(t *testing.T) {
		exe := fakeExecutor(t)
		r, err := New(WithExecutor(exe))
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(exe)
		if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), "kaniko executor") {
			t.Errorf("Available() with the executor gone = %v, want an error about the executor", err)
		}
	})
	t.Run("no unshare", func(t *testing.T) {
		r, err := New(WithExecutor(fakeExecutor(t)), WithUnshare("/nonexistent/unshare"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), "unshare") {
			t.Errorf("Available() without unshare = %v, want an error about unshare", err)
		}
	})
	t.Run("no newuidmap", func(t *testing.T) {
		// A PATH with unshare but without uidmap's helpers.
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.Symlink(unshare, filepath.Join(dir, "unshare")); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", dir)
		r, err := New(WithExecutor(fakeExecutor(t)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Available(ctx); err == nil || !strings.Contains(err.Error(), "newuidmap") {
			t.Errorf("Available() without newuidmap = %v, want an error about newuidmap", err)
		}
	})
}

// cgoBinary builds a Go program with cgo on, dynamically linked as the
// executor would be by a plain go build on a host with a C compiler.
func cgoBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatal("gcc not found: run scripts/setup (it installs gcc)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"C\"\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module cgoprobe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "executor")
	cmd := exec.Command("go", "build", "-o", exe, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a cgo program: %v\n%s", err, b)
	}
	return exe
}

// TestSandboxPriority: RUN steps run at the runner's niceness and are the
// first the kernel's OOM killer picks, whatever the gateway's own OOM
// score (here lowered, as systemd's OOMScoreAdjust= would).
func TestSandboxPriority(t *testing.T) {
	exe, regHost, base, store, _ := cacheTestEnv(t)
	r, err := New(WithExecutor(exe), WithNice(19))
	if err != nil {
		t.Fatal(err)
	}
	// A protected gateway: children inherit the score. Lowering it needs
	// CAP_SYS_RESOURCE, which the host may not grant; raising it from the
	// default 0 to 1 shows inheritance just as well.
	old, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile("/proc/self/oom_score_adj", old, 0) })
	df := "ARG BASE\nFROM ${BASE}\nRUN mkdir /out && cut -d' ' -f19 /proc/self/stat > /out/nice && cat /proc/self/oom_score_adj > /out/oom\n"
	req := netRequest(t, r, df, "", map[string]string{"BASE": base}, regHost)
	img, log := buildWithBases(t, r, store, req)
	got := imageEntries(t, img)
	for _, w := range []struct{ path, want string }{{"out/nice", "19\n"}, {"out/oom", "1000\n"}} {
		if e := got[w.path]; e.data != w.want {
			t.Errorf("RUN step's /%s = %q, want %q; build log:\n%s", w.path, e.data, w.want, log)
		}
	}
}

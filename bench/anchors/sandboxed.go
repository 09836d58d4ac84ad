package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	bu "github.com/buildgw/buildgw/bench/internal/benchutil"
	"github.com/buildgw/buildgw/internal/testbuildkit"
	"github.com/buildgw/buildgw/push"
)

// sandboxed measures what a BuildKit runner of buildgw would cost before
// one is written (issue 20 asks for the measurement first): buildkitd
// started for each build, rootless, inside the namespaces the kaniko
// runner's sandbox gets (user with the sandbox user's subordinate range,
// mount, pid, network with loopback only, IPC, UTS), as the sandbox user;
// buildctl inside the same namespaces; bases from an OCI layout the
// gateway would have fetched (named contexts), never a registry; the
// image written as an OCI layout and pushed by the gateway's own push
// package. What the prototype leaves out (pivot into a job root, cgroup,
// seccomp filter) costs nothing measurable; the gateway's upload and queue
// are left out, as for the BuildKit column.
//
// Where the cache lives (-bks-cache):
//   - tenant-root: each build's daemon keeps its state in the tenant's
//     directory when no other build of the tenant holds it (the cache that
//     warm and one-file builds find), else in a directory of its own that
//     goes with the build;
//   - local: each build's daemon keeps its state in its workspace (so that
//     the workspace's limits bound everything the build writes) and
//     imports the tenant's cache from a local cache directory (BuildKit's
//     type=local, read-only), exporting its own (mode=max) into the
//     workspace; the gateway then merges that into the tenant's directory
//     (new blobs, then the index), timed with the build.
type sandboxed struct {
	cache     string
	bkd, bctl string
	dir       string // per-run state: tenant root, workspaces, base layout
	cred      *syscall.Credential
	baseKey   string // --opt context:KEY=oci-layout://base@DIGEST
	baseRef   string
	pusher    *push.Pusher

	mu         sync.Mutex
	tenantBusy bool
	n          int
}

func newSandboxed(ctx context.Context, root, tmp, base, host, cache string) (*sandboxed, error) {
	if cache != "tenant-root" && cache != "local" {
		return nil, fmt.Errorf("-bks-cache %q: want tenant-root or local", cache)
	}
	bkd, bctl, err := testbuildkit.BinsIn(root)
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("buildgw-sandbox")
	if err != nil {
		return nil, fmt.Errorf("the sandbox user (scripts/setup creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	s := &sandboxed{cache: cache, bkd: bkd, bctl: bctl, dir: filepath.Join(tmp, "bks"),
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	for _, d := range []string{s.dir, filepath.Join(s.dir, "tenant")} {
		if err := os.Mkdir(d, 0o711); err != nil {
			return nil, err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, err
		}
	}
	// The base as the gateway's BasePreparer leaves it: an OCI layout.
	ref, err := name.ParseReference(base)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("fetching the base: %w", err)
	}
	lp, err := layout.Write(filepath.Join(s.dir, "base"), empty.Index)
	if err != nil {
		return nil, err
	}
	if err := lp.AppendImage(img); err != nil {
		return nil, err
	}
	// Handed to the sandbox user, as the gateway hands over a workspace.
	if err := filepath.WalkDir(filepath.Join(s.dir, "base"), func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		return nil, err
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, err
	}
	// BuildKit's frontend looks a FROM up by its familiar name without
	// :latest (dockerui.NamedContext); the base is on a loopback registry,
	// so that is registry/repository.
	s.baseKey = ref.Context().RegistryStr() + "/" + ref.Context().RepositoryStr()
	s.baseRef = "oci-layout://base@" + dg.String()
	if s.pusher, err = push.New(map[string]push.Registry{host: {Insecure: true}}); err != nil {
		return nil, err
	}
	return s, nil
}

// script runs inside the namespaces as their root: buildkitd in the
// background, buildctl once it answers, then buildkitd stopped cleanly so
// that its state (the tenant's cache) is whole for the next build.
const sandboxScript = `set -u
mount -t tmpfs -o mode=755,size=16m tmpfs /run || exit 70
"$BKD" --config /dev/null --root "$STATE" --addr unix:///run/bk.sock --otel-socket-path /run/otel.sock --oci-worker-rootless --oci-worker-gc=false --containerd-worker=false >"$DLOG" 2>&1 &
d=$!
i=0
until "$BCTL" --addr unix:///run/bk.sock debug workers >/dev/null 2>&1; do
  i=$((i+1)); if [ $i -ge 1200 ]; then echo "buildkitd did not answer" >&2; exit 71; fi
  sleep 0.05
done
"$BCTL" --addr unix:///run/bk.sock build --progress plain "$@"
rc=$?
kill -TERM $d
wait $d
exit $rc
`

// build builds dir and pushes the result as ref.
func (s *sandboxed) build(ctx context.Context, dir, base, ref string, cold bool, out io.Writer) error {
	s.mu.Lock()
	s.n++
	ws := filepath.Join(s.dir, fmt.Sprintf("ws-%d", s.n))
	state := filepath.Join(s.dir, "tenant")
	own := s.tenantBusy || s.cache == "local"
	if own {
		state = filepath.Join(ws, "state")
	} else {
		s.tenantBusy = true
	}
	s.mu.Unlock()
	defer func() {
		if !own {
			s.mu.Lock()
			s.tenantBusy = false
			s.mu.Unlock()
		}
		exec.Command("umount", "-R", "-l", ws).Run()
		os.RemoveAll(ws)
	}()
	outDir := filepath.Join(ws, "out")
	for _, d := range []string{ws, outDir, state} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		if err := os.Chown(d, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return err
		}
	}
	args := []string{"-c", sandboxScript, "sh",
		"--frontend", "dockerfile.v0", "--local", "context=" + dir, "--local", "dockerfile=" + dir,
		"--opt", "build-arg:BASE=" + base,
		"--oci-layout", "base=" + filepath.Join(s.dir, "base"),
		"--opt", "context:" + s.baseKey + "=" + s.baseRef,
		"--opt", "force-network-mode=none",
		"--output", "type=oci,dest=" + outDir + ",tar=false"}
	if cold {
		args = append(args, "--no-cache")
	}
	tenantCache, cacheOut := filepath.Join(s.dir, "tenant-cache"), filepath.Join(ws, "cache-out")
	if s.cache == "local" {
		if _, err := os.Stat(filepath.Join(tenantCache, "index.json")); err == nil {
			args = append(args, "--import-cache", "type=local,src="+tenantCache)
		}
		args = append(args, "--export-cache", "type=local,mode=max,dest="+cacheOut)
	}
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--user", "--map-root-user", "--map-auto",
		"--mount", "--pid", "--fork", "--mount-proc", "--net", "--ipc", "--uts", "--kill-child", "--", "/bin/sh"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
		"BKD=" + s.bkd, "BCTL=" + s.bctl, "STATE=" + state, "DLOG=" + filepath.Join(ws, "buildkitd.log")}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the sandbox: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		fmt.Fprintf(out, "--- buildkitd log\n%s", bu.Tail(filepath.Join(ws, "buildkitd.log"), 20))
		return fmt.Errorf("sandboxed BuildKit: %w", err)
	}
	if s.cache == "local" {
		fmt.Fprintln(out, "merging the cache")
		if err := mergeCache(cacheOut, tenantCache, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("merging the cache: %w", err)
		}
	}
	fmt.Fprintln(out, "pushing")
	idx, err := layout.ImageIndexFromPath(outDir)
	if err != nil {
		return fmt.Errorf("reading the output layout: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(im.Manifests) != 1 {
		return fmt.Errorf("output layout holds %d manifests, want 1", len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := s.pusher.Push(ctx, img, tag, func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...) }); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	fmt.Fprintln(out, "pushed")
	return nil
}

// mergeCache takes a build's exported local cache (an OCI layout) into
// the tenant's: blobs it lacks, then the build's index in place of the
// tenant's (last writer wins; blobs only accumulate, as a prototype).
// Hostile input in a real runner: this prototype trusts it.
func mergeCache(from, to string, uid, gid int) error {
	blobs := filepath.Join(to, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	for _, d := range []string{to, filepath.Join(to, "blobs"), blobs} {
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(filepath.Join(from, "blobs", "sha256"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		dst := filepath.Join(blobs, e.Name())
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := os.Rename(filepath.Join(from, "blobs", "sha256", e.Name()), dst); err != nil {
			return err
		}
	}
	for _, f := range []string{"oci-layout", "index.json"} {
		tmp := filepath.Join(to, f+".new")
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(to, f)); err != nil {
			return err
		}
	}
	return nil
}

package kaniko

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/netmode"
)

const cachedLine = "kaniko not run"

// TestResultCache builds with the real executor, a tenant layer cache and
// a result cache: an identical rebuild is served from the result cache
// with the same digest; any change to what determines the image runs
// kaniko; tenants never share; no_cache bypasses both caches.
func TestResultCache(t *testing.T) {
	exe, regHost, base, store, cacheDir := cacheTestEnv(t)
	r, err := New(WithExecutor(exe), WithLayerCache(filepath.Join(cacheDir, "layers")), WithResultCache(filepath.Join(cacheDir, "results"), 0))
	if err != nil {
		t.Fatal(err)
	}
	// The RUN step's output differs every time it really runs.
	const dockerfile = "ARG BASE\nFROM ${BASE}\nCOPY a.txt /a.txt\nRUN cat /proc/sys/kernel/random/uuid > /stamp\nENV GREETING=hello\nCMD [\"/bin/sh\", \"-c\", \"cat /a.txt\"]\n"
	type result struct {
		digest, stamp, a, log string
		cached                bool
	}
	build := func(tenant, content string, args map[string]string, noCache bool) result {
		t.Helper()
		req := netRequest(t, r, dockerfile, "", map[string]string{"BASE": base}, regHost)
		for k, v := range args {
			req.BuildArgs[k] = v
		}
		req.Tenant, req.NoCache = tenant, noCache
		a := filepath.Join(req.ContextDir, "a.txt")
		if err := os.WriteFile(a, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if uid, gid, differs := r.Owner(); differs {
			os.Chown(a, uid, gid)
		}
		img, log := buildWithBases(t, r, store, req)
		var res result
		res.log = log
		res.cached = strings.Contains(res.log, cachedLine)
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		res.digest = d.String()
		if res.stamp, err = fileOf(img, "stamp"); err != nil {
			t.Fatal(err)
		}
		if res.a, err = fileOf(img, "a.txt"); err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cf.Config.Env, "GREETING=hello") {
			t.Errorf("image env = %q, want GREETING=hello", cf.Config.Env)
		}
		if want := []string{"/bin/sh", "-c", "cat /a.txt"}; !slices.Equal(cf.Config.Cmd, want) {
			t.Errorf("image cmd = %q, want %q", cf.Config.Cmd, want)
		}
		return res
	}

	a1 := build("namespace_path:team-a", "one", nil, false)
	if a1.cached || a1.a != "one" {
		t.Fatalf("first build: cached %v, a.txt %q; want kaniko run, %q\n%s", a1.cached, a1.a, "one", a1.log)
	}
	a2 := build("namespace_path:team-a", "one", nil, false)
	if !a2.cached {
		t.Errorf("identical rebuild ran kaniko; want the cached result\n%s", a2.log)
	}
	if a2.digest != a1.digest || a2.stamp != a1.stamp {
		t.Errorf("identical rebuild = %s (stamp %q), want %s (stamp %q)", a2.digest, a2.stamp, a1.digest, a1.stamp)
	}

	for _, tc := range []struct {
		name    string
		tenant  string
		content string
		args    map[string]string
		noCache bool
	}{
		{name: "one context file changed", tenant: "namespace_path:team-a", content: "two"},
		{name: "a build arg added", tenant: "namespace_path:team-a", content: "one", args: map[string]string{"UNUSED": "1"}},
		{name: "other tenant", tenant: "namespace_path:team-b", content: "one"},
		{name: "no_cache", tenant: "namespace_path:team-a", content: "one", noCache: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := build(tc.tenant, tc.content, tc.args, tc.noCache)
			if got.cached {
				t.Errorf("build served from the result cache; want kaniko run\n%s", got.log)
			}
			if got.a != tc.content {
				t.Errorf("a.txt = %q, want %q", got.a, tc.content)
			}
			// Another tenant's build, or one without cache, must run the
			// step itself: no layer of team-a's either.
			if (tc.tenant != "namespace_path:team-a" || tc.noCache) && got.stamp == a1.stamp {
				t.Errorf("stamp = %q, the same as team-a's cached step; want the step run afresh", got.stamp)
			}
		})
	}

	// A damaged entry is not served: kaniko runs, and the entry is
	// replaced by a good one.
	t.Run("damaged entry", func(t *testing.T) {
		entries, err := filepath.Glob(filepath.Join(r.results.tenantDir("namespace_path:team-a"), "*", "index.json"))
		if err != nil || len(entries) == 0 {
			t.Fatalf("no entries of team-a (%v)", err)
		}
		for _, e := range entries {
			os.WriteFile(e, []byte("{}"), 0o600)
		}
		got := build("namespace_path:team-a", "one", nil, false)
		if got.cached || got.a != "one" {
			t.Errorf("build over a damaged entry: cached %v, a.txt %q; want kaniko run, %q\n%s", got.cached, got.a, "one", got.log)
		}
		again := build("namespace_path:team-a", "one", nil, false)
		if !again.cached || again.digest != got.digest {
			t.Errorf("rebuild after the damaged entry = %s (cached %v), want %s from the new entry\n%s", again.digest, again.cached, got.digest, again.log)
		}
	})

	// The same name now resolves to another base image digest.
	t.Run("base digest changed", func(t *testing.T) {
		ref, err := name.ParseReference(base, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		old, err := remote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := old.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.Config.Labels = map[string]string{"rebuilt": "yes"}
		nimg, err := mutate.ConfigFile(old, cf)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, nimg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { remote.Write(ref, old) })
		got := build("namespace_path:team-a", "one", nil, false)
		if got.cached {
			t.Errorf("build on a new base digest served from the result cache\n%s", got.log)
		}
		if got.digest == a1.digest {
			t.Errorf("digest = %s, the old base's image", got.digest)
		}
	})
}

// writeLayout writes img as the only image of a fresh OCI layout.
func writeLayout(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResultEviction(t *testing.T) {
	imgs := make([]v1.Image, 3)
	for i := range imgs {
		var err error
		if imgs[i], err = random.Image(100<<10, 1); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(t.TempDir(), "executor")
	os.WriteFile(exe, []byte("x"), 0o755)
	// Room for two entries, not three.
	rc, err := newResults(t.TempDir(), 250<<10, exe)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs[:2] {
		if err := storeLayout(context.Background(), rc, fmt.Sprint(i), writeLayout(t, img)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Using entry 0 makes entry 1 the least recently used.
	if ok, err := rc.load("t", "0", filepath.Join(t.TempDir(), "x")); !ok || err != nil {
		t.Fatalf("load(0) = %v, %v; want true, nil", ok, err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := storeLayout(context.Background(), rc, "2", writeLayout(t, imgs[2])); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"0": true, "1": false, "2": true} {
		dst := filepath.Join(t.TempDir(), "x")
		ok, err := rc.load("t", key, dst)
		if err != nil || ok != want {
			t.Errorf("load(%s) = %v, %v; want %v", key, ok, err, want)
		}
		if !ok {
			continue
		}
		img, err := readLayout(context.Background(), dst)
		if err != nil {
			t.Fatal(err)
		}
		gd, _ := img.Digest()
		i := int(key[0] - '0')
		wd, _ := imgs[i].Digest()
		if gd != wd {
			t.Errorf("entry %s holds %s, want %s", key, gd, wd)
		}
	}
	if s := treeSize(rc.dir); s > 250<<10 {
		t.Errorf("cache holds %d bytes, bound %d", s, 250<<10)
	}
}

// TestResultStoreConcurrent stores the same entry from two builds at once
// and a blob that does not match its digest: the entry stays whole and
// the bad blob never enters.
func TestResultStoreConcurrent(t *testing.T) {
	img, err := random.Image(200<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "executor")
	os.WriteFile(exe, []byte("x"), 0o755)
	rc, err := newResults(t.TempDir(), 1<<30, exe)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		src := writeLayout(t, img)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = storeLayout(context.Background(), rc, "k", src)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("store #%d = %v", i, err)
		}
	}
	dst := filepath.Join(t.TempDir(), "x")
	if ok, err := rc.load("t", "k", dst); !ok || err != nil {
		t.Fatalf("load = %v, %v; want true, nil", ok, err)
	}
	got, err := readLayout(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	gd, _ := got.Digest()
	wd, _ := img.Digest()
	if gd != wd {
		t.Errorf("entry digest = %s, want %s", gd, wd)
	}
	ls, _ := got.Layers()
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, rc)
		rc.Close()
		d, _ := l.Digest()
		if fmt.Sprintf("%x", h.Sum(nil)) != d.Hex {
			t.Errorf("layer %s has other content", d)
		}
	}

	// A tampered blob (what a hostile sandbox could leave) is refused.
	bad := writeLayout(t, img)
	l0, _ := ls[0].Digest()
	os.WriteFile(filepath.Join(bad, "blobs", "sha256", l0.Hex), []byte("not the layer"), 0o644)
	if err := storeLayout(context.Background(), rc, "bad", bad); err == nil {
		t.Errorf("store of a tampered layout = nil, want an error")
	}
	if ok, _ := rc.load("t", "bad", filepath.Join(t.TempDir(), "y")); ok {
		t.Errorf("tampered entry was kept")
	}
	// So is a blob that is a symlink to something else.
	link := writeLayout(t, img)
	lp := filepath.Join(link, "blobs", "sha256", l0.Hex)
	os.Rename(lp, lp+".real")
	os.Symlink(lp+".real", lp)
	if err := storeLayout(context.Background(), rc, "link", link); err == nil {
		t.Errorf("store of a layout with a symlinked blob = nil, want an error")
	}
	// And a blobs directory that is a symlink, even to the right blobs:
	// the sandbox could point it anywhere on the host.
	dirLink := writeLayout(t, img)
	os.Rename(filepath.Join(dirLink, "blobs"), filepath.Join(dirLink, "elsewhere"))
	os.Symlink(filepath.Join(dirLink, "elsewhere"), filepath.Join(dirLink, "blobs"))
	if err := storeLayout(context.Background(), rc, "dirlink", dirLink); err == nil {
		t.Errorf("store of a layout whose blobs directory is a symlink = nil, want an error")
	}
}

func TestResultKey(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "executor")
	os.WriteFile(exe, []byte("x"), 0o755)
	rc, err := newResults(t.TempDir(), 1<<30, exe)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(t *testing.T, mod func(dir string)) string {
		t.Helper()
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "src"), 0o755)
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nCOPY . /src\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "src", "a"), []byte("a"), 0o644)
		os.Symlink("a", filepath.Join(dir, "src", "l"))
		if mod != nil {
			mod(dir)
		}
		df, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		req := &builder.Request{ContextDir: dir, Dockerfile: "Dockerfile", Analysis: analyze(t, string(df), nil, ""),
			BaseImages: &builder.BaseImages{Images: []builder.BaseImage{{Name: "r/busybox", Digest: "sha256:1"}}}}
		k, err := rc.key(req, []string{"--dockerfile=/workspace/Dockerfile"}, "none")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ref := mk(t, nil)
	for _, tc := range []struct {
		name string
		mod  func(dir string)
		same bool
	}{
		{"mtime only", func(d string) { os.Chtimes(filepath.Join(d, "src", "a"), time.Unix(1, 0), time.Unix(1, 0)) }, true},
		{"content", func(d string) { os.WriteFile(filepath.Join(d, "src", "a"), []byte("b"), 0o644) }, false},
		{"mode", func(d string) { os.Chmod(filepath.Join(d, "src", "a"), 0o755) }, false},
		{"owner", func(d string) { os.Lchown(filepath.Join(d, "src", "a"), 4242, 4242) }, false},
		{"symlink target", func(d string) { os.Remove(filepath.Join(d, "src", "l")); os.Symlink("b", filepath.Join(d, "src", "l")) }, false},
		{"new empty file", func(d string) { os.WriteFile(filepath.Join(d, "src", "c"), nil, 0o644) }, false},
		{"renamed", func(d string) { os.Rename(filepath.Join(d, "src", "a"), filepath.Join(d, "src", "b")) }, false},
		{"Dockerfile", func(d string) { os.WriteFile(filepath.Join(d, "Dockerfile"), []byte("FROM busybox\n"), 0o644) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "owner" && os.Geteuid() != 0 {
				t.Skip("changing a file's owner needs root")
			}
			if got := mk(t, tc.mod); (got == ref) != tc.same {
				t.Errorf("key after %s equal to before = %v, want %v", tc.name, got == ref, tc.same)
			}
		})
	}
	// Without base images resolved by the gateway, nothing is cached; nor
	// without the Dockerfile's analysis.
	if k, err := rc.key(&builder.Request{ContextDir: t.TempDir(), Dockerfile: "Dockerfile", Analysis: analyze(t, "FROM bb\n", nil, "")}, nil, "none"); k != "" || err != nil {
		t.Errorf("key without base images = %q, %v; want \"\", nil", k, err)
	}
	if k, err := rc.key(&builder.Request{ContextDir: t.TempDir(), Dockerfile: "Dockerfile", BaseImages: &builder.BaseImages{}}, nil, "none"); k != "" || err != nil {
		t.Errorf("key without analysis = %q, %v; want \"\", nil", k, err)
	}
	// Nor is a build that can ADD from the network.
	for _, tc := range []struct {
		df, network string
		cached      bool
	}{
		{"FROM bb\nADD https://example.com/x.tgz /x\n", "egress", false},
		{"FROM bb\nadd  --chmod=644 git://example.com/r.git /r\n", "egress", false},
		{"FROM bb\nADD https://example.com/x.tgz /x\n", "none", true},
		{"FROM bb\nADD x.tgz /x\nRUN echo https://example.com\n", "egress", true},
		// What a regexp over the lines missed: a continuation line, a
		// URL in an ARG, a URL kaniko fetches that is not http or git.
		{"FROM bb\nADD \\\n  https://example.com/x.tgz /x\n", "egress", false},
		{"FROM bb\nARG U=https://example.com/x.tgz\nADD ${U} /x\n", "egress", false},
		{"FROM bb\nADD ftp://example.com/x.tgz /x\n", "egress", false},
		{"FROM bb\nADD git@example.com:org/r.git /r\n", "egress", false},
		// And what it took for an ADD: a heredoc's text.
		{"FROM bb\nRUN <<EOT\nADD https://example.com/x /x\nEOT\n", "egress", true},
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(tc.df), 0o644)
		req := &builder.Request{ContextDir: dir, Dockerfile: "Dockerfile", Analysis: analyze(t, tc.df, nil, ""), BaseImages: &builder.BaseImages{}}
		k, err := rc.key(req, nil, netmode.Mode(tc.network))
		if err != nil || (k != "") != tc.cached {
			t.Errorf("key(%q, %s) = %q, %v; want cached %v", tc.df, tc.network, k, err, tc.cached)
		}
	}
	// Nor one whose base image's ONBUILD triggers ADD from the network.
	for _, tc := range []struct {
		triggers []string
		cached   bool
	}{
		{nil, true},
		{[]string{"RUN true", "ADD local /l"}, true},
		{[]string{"RUN true", "ADD https://example.com/x.tgz /x"}, false},
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM bb\n"), 0o644)
		req := &builder.Request{ContextDir: dir, Dockerfile: "Dockerfile", Analysis: analyze(t, "FROM bb\n", nil, ""),
			BaseImages: onbuildLayout(t, tc.triggers)}
		k, err := rc.key(req, nil, "egress")
		if err != nil || (k != "") != tc.cached {
			t.Errorf("key(base with ONBUILD %q) = %q, %v; want cached %v", tc.triggers, k, err, tc.cached)
		}
	}
}

// onbuildLayout is an OCI layout of one base image whose config holds
// triggers, as the base store leaves it for a build.
func onbuildLayout(t *testing.T, triggers []string) *builder.BaseImages {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.OnBuild = triggers
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "base")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return &builder.BaseImages{Layout: dir, Images: []builder.BaseImage{{Name: "r.example/bb:latest", Digest: d.String()}}}
}

// BenchmarkResultKey hashes a context shaped like the reference project
// (1500 files, 30 MiB): what every build with a result cache pays before
// it starts, hit or miss.
func BenchmarkResultKey(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, 20<<10)
	for i := range 1500 {
		d := filepath.Join(dir, "src", fmt.Sprintf("pkg%02d", i%40))
		os.MkdirAll(d, 0o755)
		buf[0] = byte(i)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	exe := filepath.Join(b.TempDir(), "executor")
	os.WriteFile(exe, []byte("x"), 0o755)
	rc, err := newResults(b.TempDir(), 1<<30, exe)
	if err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM b\n"), 0o644)
	req := &builder.Request{ContextDir: dir, Dockerfile: "Dockerfile", Analysis: &dockerfile.Analysis{}, BaseImages: &builder.BaseImages{}}
	b.SetBytes(1500 * int64(len(buf)))
	for b.Loop() {
		if _, err := rc.key(req, nil, "none"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResultStore keeps a 30 MiB image: what a build that misses
// pays after kaniko.
func BenchmarkResultStore(b *testing.B) {
	img, err := random.Image(10<<20, 3)
	if err != nil {
		b.Fatal(err)
	}
	src := b.TempDir()
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		b.Fatal(err)
	}
	exe := filepath.Join(b.TempDir(), "executor")
	os.WriteFile(exe, []byte("x"), 0o755)
	rc, err := newResults(b.TempDir(), 1<<40, exe)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(30 << 20)
	i := 0
	for b.Loop() {
		i++
		if err := storeLayout(context.Background(), rc, fmt.Sprint(i), src); err != nil {
			b.Fatal(err)
		}
	}
}

// storeLayout stores the image of the layout in dir under key, as a build
// does with kaniko's output.
func storeLayout(ctx context.Context, rc *results, key, dir string) error {
	img, err := readLayout(ctx, dir)
	if err != nil {
		return err
	}
	return rc.store(ctx, "t", key, img)
}

package kaniko

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// highIDs are the owner of /opt in TestHighIDs' base image: above the
// 65536 ids that the usual subordinate range gives a sandbox.
const highUID, highGID = 491327, 89939

// TestHighIDs builds on a base image with a directory owned by ids above
// 65536, as base images made on hosts with directory users are: it must
// unpack, and RUN steps see the owner.
func TestHighIDs(t *testing.T) {
	testenv.RequireSandbox(t)
	exe, regHost, base, store, _ := cacheTestEnv(t)
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	high := pushHighIDImage(t, regHost, base)
	req := netRequest(t, r, "ARG BASE\nFROM ${BASE}\nRUN stat -c %u:%g /opt /opt/f > /owners\n", "", map[string]string{"BASE": high}, regHost)
	img, log := buildWithBases(t, r, store, req)
	got, err := fileOf(img, "owners")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if want := "491327:89939\n491327:89939\n"; got != want {
		t.Errorf("owners of /opt and /opt/f seen by RUN = %q, want %q", got, want)
	}
}

// pushHighIDImage pushes base plus a layer with /opt and /opt/f owned by
// highUID:highGID, and returns its reference.
func pushHighIDImage(t *testing.T, regHost, base string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "opt/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: highUID, Gid: highGID},
		{Name: "opt/f", Typeflag: tar.TypeReg, Mode: 0o644, Uid: highUID, Gid: highGID, Size: 3},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("hi\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	baseRef, err := name.ParseReference(base, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	baseImg, err := remote.Image(baseRef)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(baseImg, layer)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(strings.TrimSuffix(base, "busybox:latest")+"highids:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

func TestSubIDCount(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	os.WriteFile(f, []byte("other:100000:65536\nbuildgw-sandbox:131072:65536\n1001:2147483648:2147418112\nbuildgw-sandbox:300000:5\n"), 0o644)
	for _, tc := range []struct {
		name string
		uid  int
		want int
	}{
		{"buildgw-sandbox", 999, 65536}, // the first range, as unshare --map-auto takes
		{"someone", 1001, 2147418112},   // by number
		{"nobody-here", 4242, 0},
	} {
		if got, err := subIDCount(f, tc.name, tc.uid); err != nil || got != tc.want {
			t.Errorf("subIDCount(%q, %d) = %d, %v, want %d", tc.name, tc.uid, got, err, tc.want)
		}
	}
	os.WriteFile(f, []byte("buildgw-sandbox:131072:lots\n"), 0o644)
	if _, err := subIDCount(f, "buildgw-sandbox", 999); err == nil {
		t.Errorf("subIDCount of a malformed range = nil error, want one")
	}
}

// TestCheckIDRanges: after scripts/setup the sandbox user's ranges are
// large enough.
func TestCheckIDRanges(t *testing.T) {
	testenv.RequireSandbox(t)
	r, err := New(WithExecutor(fakeExecutor(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckIDRanges(); err != nil {
		t.Errorf("CheckIDRanges() = %v, want nil after scripts/setup", err)
	}
}

// TestSmallIDRange: with the usual 65536-id range, the start-up check and
// the error of a build that hit it name the range, its files and the fix.
func TestSmallIDRange(t *testing.T) {
	testenv.RequireSandbox(t)
	r, err := New(WithExecutor(fakeExecutor(t)))
	if err != nil {
		t.Fatal(err)
	}
	name, uid, err := r.sandboxUser()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r.o.subUID, r.o.subGID = filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
	os.WriteFile(r.o.subUID, []byte(fmt.Sprintf("%s:131072:65536\n", name)), 0o644)
	os.WriteFile(r.o.subGID, []byte(fmt.Sprintf("%d:131072:%d\n", uid, MinSubordinateIDs)), 0o644)
	wants := []string{"sandbox user " + name, "65536 subordinate uids (" + r.o.subUID + ")", fmt.Sprintf("%d subordinate gids", MinSubordinateIDs), "scripts/setup"}
	for what, err := range map[string]error{"CheckIDRanges()": r.CheckIDRanges(), "idRangeError(1)": r.idRangeError(1)} {
		for _, want := range wants {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s = %v, want an error containing %q", what, err, want)
			}
		}
	}
}

func TestChownHint(t *testing.T) {
	for _, tc := range []struct {
		writes []string
		want   bool
	}{
		{[]string{"error building image: error building stage: failed to get filesystem from image: chown /opt: invalid argument\n"}, true},
		{[]string{"failed to get filesystem from image: ch", "own /opt: invalid argu", "ment\nnext line\n"}, true},
		{[]string{"lchown /a/b: invalid argument\n"}, true},
		{[]string{"chown /opt: operation not permitted\n"}, false},
		{[]string{"open /x: invalid argument\n"}, false},
		{[]string{"chown /opt: invalid argument"}, false}, // not a whole line yet
		// Lines skipped for lacking the suffix, in the same write.
		{[]string{strings.Repeat("a flood of lines\n", 1000) + "chown /opt: invalid argument\nafter\n"}, true},
		{[]string{"open /x: invalid argument\nchown /opt: invalid argument\n"}, true},
		{[]string{"chown /opt\nopen /x: invalid argument\n"}, false}, // on two lines
		{[]string{"x\nchown /opt: invalid", " argument\n"}, true},
	} {
		h := &chownHint{}
		for _, w := range tc.writes {
			h.Write([]byte(w))
		}
		if got := h.Seen(); got != tc.want {
			t.Errorf("chownHint after %q: Seen() = %v, want %v", tc.writes, got, tc.want)
		}
	}
}

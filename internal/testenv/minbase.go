package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Minbase returns a Debian bookworm minbase root filesystem made by
// debootstrap. It has files owned by non-root groups (/etc/gshadow is
// root:shadow), which only unpack in a sandbox with the full subordinate
// uid/gid range. It is cached between runs in $BUILDGW_TEST_CACHE
// (default /var/cache/buildgw-test) since debootstrap takes a minute.
func Minbase(t testing.TB) string {
	t.Helper()
	return MinbaseWith(t)
}

// MinbaseWith returns a Debian bookworm minbase root filesystem that also
// has the given packages installed (debootstrap --include), cached like
// Minbase under a name made of the packages.
func MinbaseWith(t testing.TB, pkgs ...string) string {
	t.Helper()
	cache := os.Getenv("BUILDGW_TEST_CACHE")
	if cache == "" {
		cache = "/var/cache/buildgw-test"
	}
	name := "minbase-bookworm"
	if len(pkgs) > 0 {
		pkgs = slices.Sorted(slices.Values(pkgs))
		name += "+" + strings.Join(pkgs, "+")
	}
	dir := filepath.Join(cache, name)
	if _, err := os.Stat(filepath.Join(dir, "etc", "gshadow")); err == nil {
		return dir
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatal("debootstrap not found: run scripts/setup --test")
	}
	mirror := aptMirror()
	if mirror == "" {
		t.Fatal("no Debian mirror found in /etc/apt/sources.list{,.d}")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	// go test runs packages in parallel processes: one makes the root,
	// the others wait for it and take the cached one.
	lock, err := os.OpenFile(filepath.Join(cache, name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("locking the minbase cache: %v", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(dir, "etc", "gshadow")); err == nil {
		return dir
	}
	// A root left half made by a run that was killed is made again.
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	args := []string{"--variant=minbase"}
	if len(pkgs) > 0 {
		args = append(args, "--include="+strings.Join(pkgs, ","))
	}
	cmd := exec.Command("debootstrap", append(args, "bookworm", tmp, mirror)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// aptMirror returns the first Debian archive URI apt is configured with,
// so the tests use whatever mirror this host uses.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		if u := scan(f, func(line string) string {
			if rest, ok := strings.CutPrefix(line, "URIs:"); ok {
				for _, u := range strings.Fields(rest) {
					if !strings.Contains(u, "security") {
						return u
					}
				}
			}
			return ""
		}); u != "" {
			return u
		}
	}
	files, _ = filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		if u := scan(f, func(line string) string {
			fs := strings.Fields(line)
			if len(fs) >= 3 && fs[0] == "deb" && !strings.Contains(fs[1], "security") {
				if strings.HasPrefix(fs[1], "[") {
					for i, w := range fs {
						if strings.HasSuffix(w, "]") && i+1 < len(fs) {
							return fs[i+1]
						}
					}
					return ""
				}
				return fs[1]
			}
			return ""
		}); u != "" {
			return u
		}
	}
	return ""
}

func scan(path string, f func(string) string) string {
	fh, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer fh.Close()
	s := bufio.NewScanner(fh)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if u := f(line); u != "" {
			return u
		}
	}
	return ""
}

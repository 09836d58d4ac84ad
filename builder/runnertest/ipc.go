package runnertest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/testenv"
)

// SandboxHostname is the host name every build sees in its RUN steps,
// whatever the gateway host's.
const SandboxHostname = "buildgw"

// WithHostname has the suite expect name, instead of SandboxHostname, as
// the host name of RUN steps: for a runner whose builder names its RUN
// containers itself. What matters is that it is not the gateway host's.
func WithHostname(name string) Option {
	return func(s *suite) { s.hostname = name }
}

// probe returns the sandbox probe (internal/sandboxprobe), built once for
// the suite.
func (s *suite) probe(t *testing.T) string {
	t.Helper()
	s.probeOnce.Do(func() {
		p := testenv.Build(t, "./internal/sandboxprobe", "sandboxprobe")
		b, err := os.ReadFile(p)
		if err != nil {
			s.probeErr = err
			return
		}
		s.probeBin = string(b)
	})
	if s.probeErr != nil {
		t.Fatalf("building the sandbox probe: %v", s.probeErr)
	}
	return s.probeBin
}

// testIPC checks that builds share no SysV IPC with each other or the
// host, and that a build sees its own host name, not the host's: one
// build leaves a shared memory segment with a marker behind, a later one
// looks for it, and afterwards the host must not hold it either.
func (s *suite) testIPC(t *testing.T) {
	t.Parallel()
	probe := s.probe(t)
	key := 0x42470000 | int(randomInt(t, 0xffff))
	marker := "buildgw-ipc-" + randomHex(t, 8)
	r := s.newRunner(t)
	t.Cleanup(func() { removeSegment(key) })

	run := func(step string) string {
		t.Helper()
		st := s.newSetup(t, r, job{files: map[string]string{
			"sandboxprobe": probe,
			"Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY sandboxprobe /sandboxprobe\n" +
				"RUN chmod +x /sandboxprobe && mkdir -p /probe && (" + step + ") > /probe/out.txt 2>&1; cat /probe/out.txt\n",
		}})
		img, _ := mustBuild(t, r, st.req)
		return files(t, img)["/probe/out.txt"].body
	}
	k := strconv.Itoa(key)
	a := run(fmt.Sprintf("/sandboxprobe shm-create %s 16777216 %s; /sandboxprobe hostname", k, marker))
	if want := "shm-create " + k + ": created"; !strings.Contains(a, want) {
		t.Fatalf("build A: the segment was not created (want %q):\n%s", want, a)
	}
	if want := "hostname: " + s.hostname + "\n"; !strings.Contains(a, want) {
		host, _ := os.Hostname()
		t.Errorf("RUN step's output %q lacks %q (the gateway host's name is %q)", a, want, host)
	}
	b := run("/sandboxprobe shm-read " + k)
	if strings.Contains(b, marker) || !strings.Contains(b, "shm-read "+k+": shmget: no such file or directory") {
		t.Errorf("build B found build A's shared memory segment (want shmget: no such file or directory):\n%s", b)
	}
	if hostSegment(t, key) {
		t.Errorf("shared memory segment %#x of a build is left on the host after the build", key)
	}
}

// hostSegment reports whether the host's IPC namespace holds a shared
// memory segment with key.
func hostSegment(t *testing.T, key int) bool {
	t.Helper()
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		t.Fatalf("listing the host's shared memory: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 0 && fs[0] == strconv.Itoa(key) {
			return true
		}
	}
	return false
}

// removeSegment removes a segment a build left on the host, so that a
// failing test leaks nothing.
func removeSegment(key int) {
	if id, err := unix.SysvShmGet(key, 0, 0); err == nil {
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	}
}

// testKeyrings checks that no build step reads a secret from the kernel
// keyrings of the process that runs the build: keys in a session keyring
// are readable by whoever possesses it, whatever its uid or user
// namespace, and children inherit the session keyring of the thread that
// starts them. The test holds a secret in the session keyring of the
// thread that calls Build, shows that a host process started from that
// thread reads it, and expects a RUN step not to.
func (s *suite) testKeyrings(t *testing.T) {
	t.Parallel()
	probe := s.probe(t)
	r := s.newRunner(t)
	// The keyring is the thread's: this goroutine keeps the thread, which
	// ends with it, so no other goroutine ever runs with the secret.
	runtime.LockOSThread()
	desc, secret := "buildgw-test-"+randomHex(t, 8), "buildgw-secret-"+randomHex(t, 8)
	if _, err := unix.KeyctlJoinSessionKeyring(desc); err != nil {
		t.Fatalf("joining a session keyring of the test's own: %v", err)
	}
	if _, err := unix.AddKey("user", desc, []byte(secret), unix.KEY_SPEC_SESSION_KEYRING); err != nil {
		t.Fatalf("adding a key to the test's session keyring: %v", err)
	}
	host := filepath.Join(t.TempDir(), "sandboxprobe")
	if err := os.WriteFile(host, []byte(probe), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := hostRun(host, "keyring-read", desc)
	if err != nil {
		t.Fatalf("running %s on the host: %v", host, err)
	}
	if !strings.Contains(string(out), secret) {
		t.Fatalf("a host process started by the test does not read the secret the test holds, so the check below would prove nothing:\n%s", out)
	}

	st := s.newSetup(t, r, job{files: map[string]string{
		"sandboxprobe": probe,
		"Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY sandboxprobe /sandboxprobe\n" +
			"RUN chmod +x /sandboxprobe && mkdir -p /probe && /sandboxprobe keyring-read " + desc + " > /probe/out.txt 2>&1; cat /probe/out.txt\n",
	}})
	img, _ := mustBuild(t, r, st.req)
	got := files(t, img)["/probe/out.txt"].body
	if strings.Contains(got, secret) || !strings.Contains(got, "keyring-read "+desc+": keyctl search: ") {
		t.Errorf("RUN step's keyring-read %s = %q, want the search refused, never the gateway's secret", desc, got)
	}
}

// hostRun runs a program the test has just written. While another
// parallel test forks, its child briefly holds the write descriptor of
// that file, and exec fails with ETXTBSY (golang.org/issue/22315), so
// that one error is retried until a deadline.
func hostRun(exe string, args ...string) ([]byte, error) {
	deadline := time.Now().Add(testenv.Scale(30 * time.Second))
	for {
		out, err := exec.Command(exe, args...).CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) || time.Now().After(deadline) {
			return out, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

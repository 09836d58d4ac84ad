package socketaudit

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// holdEnv makes the test binary a process that listens on a unix socket
// and holds it until its stdin closes.
const holdEnv = "SOCKETAUDIT_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		hold(path)
		return
	}
	os.Exit(m.Run())
}

func hold(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
		os.Exit(1)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	os.Stdout.WriteString("ready\n")
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// startHolder starts a process holding a socket at path and returns its
// pid; it ends with the test.
func startHolder(t *testing.T, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("holder: %q", line)
	}
	return cmd.Process.Pid
}

func TestScanHostHolders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docker.sock")
	pid := startHolder(t, path)
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatal(err)
	}
	// A client connection: the holder's accepted end is its second fd on
	// the socket.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	r, err := ScanHost("/proc", path)
	if err != nil {
		t.Fatalf("ScanHost = %v", err)
	}
	if !r.Exists || r.Mode != "0660" {
		t.Errorf("ScanHost(%q) = exists %v mode %s, want a 0660 socket", path, r.Exists, r.Mode)
	}
	var found *Holder
	for i, h := range r.Holders {
		if h.PID == pid {
			found = &r.Holders[i]
		}
		if h.PID == os.Getpid() {
			t.Errorf("ScanHost lists the test itself (pid %d), which holds only an unnamed client socket", h.PID)
		}
	}
	if found == nil {
		t.Fatalf("ScanHost(%q).Holders = %+v, want pid %d", path, r.Holders, pid)
	}
	if len(found.FDs) < 1 || found.UID != os.Getuid() || !strings.Contains(found.Command, filepath.Base(os.Args[0])) {
		t.Errorf("holder = %+v, want fds, uid %d and the command", *found, os.Getuid())
	}
	if r.Findings() < 1 {
		t.Errorf("Findings() = %d, want at least the holder", r.Findings())
	}
}

func TestScanHostMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns sockets: run it as root, as the test suite is")
	}
	nogroup, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(nogroup.Gid)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	tests := []struct {
		name     string
		mode     os.FileMode
		uid, gid int
		want     []string // parts of the problems, in order
	}{
		{"root:root 0660", 0o660, 0, 0, nil},
		{"root:root 0600", 0o600, 0, 0, nil},
		{"world-writable", 0o666, 0, 0, []string{"mode 0666 lets every user"}},
		{"other group", 0o660, 0, gid, []string{"group nogroup may use the daemon"}},
		{"other owner", 0o600, uid, 0, []string{"owned by nobody"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "docker.sock")
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := os.Chown(path, tc.uid, tc.gid); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Chmod(path, uint32(tc.mode)); err != nil {
				t.Fatal(err)
			}
			r, err := ScanHost("/proc", path)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Problems) != len(tc.want) {
				t.Fatalf("ScanHost(%s).Problems = %q, want %d", tc.name, r.Problems, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(r.Problems[i], w) {
					t.Errorf("ScanHost(%s).Problems[%d] = %q, want %q", tc.name, i, r.Problems[i], w)
				}
			}
		})
	}
}

func TestScanHostNoSocket(t *testing.T) {
	r, err := ScanHost("/proc", filepath.Join(t.TempDir(), "docker.sock"))
	if err != nil || r.Exists || r.Findings() != 0 {
		t.Errorf("ScanHost(missing) = %+v, %v, want no socket and no findings", r, err)
	}
}

//go:build linux

package socketaudit

import (
	"bufio"
	"io"
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
			// Say so, so the test knows this end is accepted; keep it open.
			c.Write([]byte("a"))
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
	// A client connection.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("reading the holder's greeting: %v", err)
	}

	r, err := ScanHost("/proc", path)
	if err != nil {
		t.Fatalf("ScanHost = %v", err)
	}
	if !r.Exists || r.Mode != "0660" {
		t.Errorf("ScanHost(%q) = exists %v mode %s, want a 0660 socket", path, r.Exists, r.Mode)
	}
	byPID := map[int]Holder{}
	for _, h := range r.Holders {
		byPID[h.PID] = h
	}
	// The listener with the connection it accepted, and the test itself as
	// the client, though its socket has no name.
	daemon, ok := byPID[pid]
	if !ok || daemon.Role != "daemon" || len(daemon.FDs) != 2 || daemon.UID != os.Getuid() || !strings.Contains(daemon.Command, filepath.Base(os.Args[0])) {
		t.Errorf("ScanHost(%q).Holders = %+v, want pid %d as the daemon with 2 fds, its uid and command", path, r.Holders, pid)
	}
	client, ok := byPID[os.Getpid()]
	if !ok || client.Role != "client" || len(client.FDs) != 1 {
		t.Errorf("ScanHost(%q).Holders = %+v, want the test (pid %d) as a client with one fd", path, r.Holders, os.Getpid())
	}
	if len(r.Holders) != 2 || r.Findings() != 2 {
		t.Errorf("ScanHost(%q) = %d holders, %d findings, want 2 and 2", path, len(r.Holders), r.Findings())
	}
	c.Close()
	r, err = ScanHost("/proc", path)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Holders) != 1 || r.Holders[0].PID != pid {
		t.Errorf("after the client closed: holders %+v, want the daemon alone", r.Holders)
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

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// syncWriter is a bytes.Buffer safe for a process's output and a test
// reading it at once.
type syncWriter struct {
	mu sync.Mutex
	w  interface {
		Write([]byte) (int, error)
		String() string
	}
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// bgClient is a buildctl-lite run in the background, its output kept.
type bgClient struct {
	cmd            *exec.Cmd
	stdout, stderr *syncWriter
	exited         chan struct{}
}

// startClient starts buildctl-lite with args against g as token; the test
// kills it at cleanup if it still runs.
func (g *gateway) startClient(t *testing.T, token string, args ...string) *bgClient {
	t.Helper()
	c := &bgClient{
		cmd:    exec.Command(filepath.Join(g.bin, "buildctl-lite"), args...),
		stdout: &syncWriter{w: &bytes.Buffer{}},
		stderr: &syncWriter{w: &bytes.Buffer{}},
		exited: make(chan struct{}),
	}
	c.cmd.Env = append(os.Environ(), "BUILDGW_URL="+g.url, "BUILDGW_TOKEN="+token)
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
	})
	return c
}

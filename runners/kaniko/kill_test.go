package kaniko

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/internal/testenv"
)

// TestCancelWaitsForNamespace: Build, cancelled, returns only when every
// process of the sandbox is gone, also when one of them takes long to
// die. Here a process a RUN step left in the background (in a session of
// its own, or kaniko would kill it with the step) is frozen (cgroup
// v1 freezer) for 6 s, so the namespace's init, which waits for it as it
// exits, ends that much later. Before, Build returned as soon as unshare
// and the build's output pipe were gone, with kaniko, the init, still
// ending, and the e2e timeout test saw it alive on a busy host.
func TestCancelWaitsForNamespace(t *testing.T) {
	exe, regHost, base, store, _ := cacheTestEnv(t)
	r, err := New(WithExecutor(exe))
	if err != nil {
		t.Fatal(err)
	}
	df := "ARG BASE\nFROM ${BASE}\n" +
		// The step ends once the background process has its own process
		// group (field 5 of stat), out of reach of kaniko's end-of-step kill.
		"RUN setsid sleep 3600 </dev/null >/dev/null 2>&1 & while [ \"$(cut -d' ' -f5 /proc/$!/stat)\" = \"$(cut -d' ' -f5 /proc/$$/stat)\" ]; do :; done\n" +
		"RUN echo ready; sleep 3600\n"
	req := netRequest(t, r, df, "", map[string]string{"BASE": base}, regHost)
	if req.BaseImages, err = store.Prepare(context.Background(), req, io.Discard); err != nil {
		t.Fatal(err)
	}
	frz := filepath.Join("/sys/fs/cgroup/freezer", fmt.Sprintf("buildgw-test-cancel-%d", os.Getpid()))
	if err := os.Mkdir(frz, 0o755); err != nil {
		t.Fatal(err)
	}
	thaw := func() { os.WriteFile(filepath.Join(frz, "freezer.state"), []byte("THAWED"), 0o644) }
	t.Cleanup(func() {
		thaw()
		for deadline := time.Now().Add(testenv.Scale(10 * time.Second)); os.Remove(frz) != nil && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { _, err := r.Build(ctx, req, log); done <- err }()
	for deadline := time.Now().Add(testenv.Scale(3 * time.Minute)); !strings.Contains(log.String(), "\nready\n"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("RUN step not running after 3 minutes; log:\n%s", log.String())
		}
	}
	// The step's processes, once both sleeps run.
	var sandbox, bg []hostfs.Process
	for deadline := time.Now().Add(testenv.Scale(time.Minute)); ; time.Sleep(50 * time.Millisecond) {
		sandbox, bg = descendants(t), nil
		sleeps := 0
		for _, p := range sandbox {
			if p.Comm != "sleep" {
				continue
			}
			sleeps++
			if out, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", p.Pid)); out == "/dev/null" {
				bg = append(bg, p)
			}
		}
		if sleeps == 2 && len(bg) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox processes %v, want two sleeps, one with its output to /dev/null", sandbox)
		}
	}
	if err := os.WriteFile(filepath.Join(frz, "cgroup.procs"), []byte(fmt.Sprint(bg[0].Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(frz, "freezer.state"), []byte("FROZEN"), 0o644); err != nil {
		t.Fatal(err)
	}

	cancel()
	thawed := time.AfterFunc(6*time.Second, thaw)
	defer thawed.Stop()
	select {
	case <-done:
	case <-time.After(testenv.Scale(2 * time.Minute)):
		t.Fatal("Build still running 2 minutes after it was cancelled")
	}
	for _, p := range sandbox {
		if p.Alive() {
			t.Errorf("sandbox process %d (%s) still runs after the cancelled Build returned", p.Pid, p.Comm)
		}
	}
}

// descendants returns the processes this test process started, and
// theirs: unshare and the whole sandbox.
func descendants(t *testing.T) []hostfs.Process {
	t.Helper()
	ps, err := hostfs.Procs()
	if err != nil {
		t.Fatal(err)
	}
	in := map[int]bool{os.Getpid(): true}
	var out []hostfs.Process
	for grew := true; grew; {
		grew = false
		for _, p := range ps {
			if !in[p.Pid] && in[p.PPid] {
				in[p.Pid], grew = true, true
				out = append(out, p)
			}
		}
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

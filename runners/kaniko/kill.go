package kaniko

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/internal/hostfs"
)

// initWait bounds how long Build waits, after a kill, for the sandbox's
// pid namespace to end. Killed processes always exit; what they wait for
// is CPU time, and a sandbox runs niced.
const initWait = time.Minute

// sandboxKill ends a sandbox started through unshare --fork. It kills the
// pid namespace's init, not unshare: as the init exits the kernel kills
// every other process of the namespace and the init waits for them, and
// unshare, which waits for the init, exits only after that. Killing
// unshare first (or its whole process group) let Wait return while the
// init, kaniko itself, was still ending, out of its cgroup already: on a
// saturated host it outlived Build.
type sandboxKill struct {
	mu     sync.Mutex
	init   int // the namespace's init, pinned by initFD
	initFD int // -1 until kill found and killed the init
}

func newSandboxKill() *sandboxKill { return &sandboxKill{initFD: -1} }

// kill kills the namespace's init if unshare (pid, or the executor that
// holds before it becomes unshare) has started one, else unshare's
// process group: nothing of the build runs outside it yet.
func (k *sandboxKill) kill(unshare int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.initFD >= 0 {
		return nil
	}
	if pid, fd, ok := pinChild(unshare); ok {
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err == nil || errors.Is(err, unix.ESRCH) {
			hostfs.Hasten(pid)
			k.init, k.initFD = pid, fd
			return nil
		}
		unix.Close(fd)
	}
	return syscall.Kill(-unshare, syscall.SIGKILL)
}

// pinChild finds the child of parent that is in a pid namespace of its
// own (unshare's other children, such as the one that runs newuidmap, are
// not) and pins it with a pidfd, checking after pinning that the pid is
// still that child.
func pinChild(parent int) (int, int, bool) {
	ps, err := hostfs.Procs()
	if err != nil {
		return 0, 0, false
	}
	parentNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", parent))
	if err != nil {
		return 0, 0, false
	}
	for _, p := range ps {
		if p.PPid != parent {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.Pid)); err != nil || ns == parentNS {
			continue
		}
		fd, err := unix.PidfdOpen(p.Pid, 0)
		if err != nil {
			continue
		}
		if q, err := hostfs.Lookup(p.Pid); err == nil && q.PPid == parent && q.Start == p.Start {
			return p.Pid, fd, true
		}
		unix.Close(fd)
	}
	return 0, 0, false
}

// wait waits, up to d, until the init kill killed has exited (unshare's
// Wait returns earlier if its own WaitDelay ran out first), and releases
// it. It is a no-op if kill never ran or found no init.
func (k *sandboxKill) wait(d time.Duration) error {
	k.mu.Lock()
	pid, fd := k.init, k.initFD
	k.initFD = -1
	k.mu.Unlock()
	if fd < 0 {
		return nil
	}
	defer unix.Close(fd)
	for deadline := time.Now().Add(d); ; {
		// A pidfd polls readable once its process has exited.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		if n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("waiting for the sandbox's init (pid %d): %w", pid, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sandbox's init (pid %d) still ran %s after it was killed", pid, d)
		}
		hostfs.Hasten(pid)
	}
}

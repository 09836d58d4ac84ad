package dind

import (
	"fmt"
	"os"
	"runtime"

	"github.com/buildgw/buildgw/runners/egress"
	"golang.org/x/sys/unix"
)

// loopbackUp brings up the loopback interface of pid's network namespace,
// which starts down.
func loopbackUp(pid int) error {
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A goroutine of its own, locked to its thread, which enters the
	// namespace and goes back: if going back fails, the goroutine ends
	// still locked, and the runtime discards the thread.
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering the network namespace: %w", err)
			return
		}
		err = egress.LoopbackUp()
		if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
			errc <- fmt.Errorf("leaving the network namespace: %w", rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

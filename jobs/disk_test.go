package jobs_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/internal/testenv"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/runners/kaniko"
)

// vmHWM returns the peak resident memory of this process, after
// resetting it if reset.
func vmHWM(t *testing.T, reset bool) int64 {
	t.Helper()
	if reset {
		// 5: reset the peak resident set size to the current one.
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// A RUN step that nests 30,000 directories costs the gateway's disk
// watcher (and the removal of the workspace) no more memory than a
// shallow tree: the build is stopped, saying why its workspace cannot be
// measured, instead of running on unmeasured; its workspace goes; and
// the next build runs as usual.
func TestManagerDeepTree(t *testing.T) {
	r := newRestartable(t)
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithConcurrency(1), jobs.WithWorkspaceLimit(1<<30),
		jobs.WithDiskCheckInterval(200*time.Millisecond))
	dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
	// 15 mkdir -p of 2000 levels each: a path of 4000 bytes stays under
	// PATH_MAX. The sleep leaves the watcher time to walk it.
	deep := `p=$(yes d | head -n 2000 | tr '\n' /); i=0; while [ $i -lt 15 ]; do mkdir -p $p && cd -P $p || exit 1; i=$((i+1)); done; echo nested; sleep 60`
	before := vmHWM(t, true)
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{dest("deep")}}, busyboxContext(t, base, deep))
	b := wait(t, j, 3*time.Minute)
	const want = "its directories nest more than 1024 deep"
	if b.Status != api.StatusFailed || !strings.Contains(b.Error, "could not be measured") || !strings.Contains(b.Error, want) {
		t.Errorf("build nesting 30000 directories = %v %q, want failed naming why it could not be measured (%q); log:\n%s", b.Status, b.Error, want, logOf(t, j))
	}
	if !strings.Contains(logOf(t, j), "nested") {
		t.Errorf("the build was stopped before it nested its directories; log:\n%s", logOf(t, j))
	}
	// The workspace goes, deep tree and all.
	for _, dir := range []string{r.l.Jobs, r.l.Trash} {
		for deadline := time.Now().Add(testenv.Scale(time.Minute)); ; time.Sleep(100 * time.Millisecond) {
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still holds %d entries, want the deep workspace removed", dir, len(ents))
			}
		}
	}
	grew := vmHWM(t, false) - before
	t.Logf("peak resident memory grew by %d KiB", grew>>10)
	if grew > 64<<20 {
		t.Errorf("the gateway's peak resident memory grew by %d MiB during the deep build, want under 64 MiB", grew>>20)
	}
	next := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{dest("next")}}, busyboxContext(t, base, "echo fine > /fine"))
	if b := wait(t, next, 2*time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("build after the deep one = %v %q, want succeeded; log:\n%s", b.Status, b.Error, logOf(t, next))
	}
}

// floodRun prints 2000 MiB of lines as fast as a RUN step can: 1 MiB of
// them, made once, and then cat'ed 2000 times, 100 to a cat (which moves a
// file into the pipe in large writes, unlike yes).
const floodRun = `yes 'flooding the log with one line after another' | head -c 1048576 > /flood; ` +
	`set --; i=0; while [ $i -lt 100 ]; do set -- "$@" /flood; i=$((i+1)); done; ` +
	`i=0; while [ $i -lt 20 ]; do cat "$@" || exit 1; i=$((i+1)); done; rm /flood; echo the-last-line`

// A RUN step that prints 2000 MiB as fast as it can leaves a log within
// log_max_bytes: its head, one line naming how many bytes were dropped,
// and its tail, which ends with the build's outcome.
func TestManagerLogFlood(t *testing.T) {
	r := newRestartable(t)
	base := testenv.Busybox(t, r.reg)
	const capBytes = 256 << 10
	m, _ := r.start(t, true, jobs.WithLogLimit(capBytes))
	before := vmHWM(t, true)
	start := time.Now()
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/flood:v1"}},
		busyboxContext(t, base, floodRun))
	b := wait(t, j, 3*time.Minute)
	if b.Status != api.StatusSucceeded {
		t.Fatalf("flooding build = %v %q, want succeeded", b.Status, b.Error)
	}
	fi, err := os.Stat(r.l.Log(j.ID))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > capBytes+200 {
		t.Errorf("stored log = %d bytes, want at most log_max_bytes (%d) and one line", fi.Size(), capBytes)
	}
	l := logOf(t, j)
	head, rest, ok := strings.Cut(l, "#buildgw log_max_bytes: ")
	if !ok {
		t.Fatalf("log has no dropped-bytes line; it ends:\n%s", l[max(0, len(l)-500):])
	}
	var dropped int64
	if _, err := fmt.Sscanf(rest, "%d bytes of output dropped", &dropped); err != nil || dropped < 2000<<20-capBytes {
		t.Errorf("dropped-bytes line %q: %d bytes (%v), want over 2000 MiB less the cap", strings.SplitN(rest, "\n", 2)[0], dropped, err)
	}
	if !strings.HasPrefix(head, "#buildgw accepted") {
		t.Errorf("log's head starts %q, want the build's start", head[:min(len(head), 60)])
	}
	if !strings.Contains(rest, "the-last-line") || !strings.Contains(rest, "#buildgw pushed sha256:") {
		t.Errorf("log's tail lacks the end of the output and the outcome; it ends:\n%s", rest[max(0, len(rest)-500):])
	}
	// Built with the gateway's memory flat, and the next build runs.
	grew := vmHWM(t, false) - before
	t.Logf("2000 MiB flood: built and checked in %s; peak resident memory grew by %d KiB", time.Since(start).Round(time.Millisecond), grew>>10)
	if grew > 64<<20 {
		t.Errorf("the gateway's peak resident memory grew by %d MiB during the flood, want under 64 MiB", grew>>20)
	}
	next := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/flood:next"}}, busyboxContext(t, base, "echo fine > /fine"))
	if b := wait(t, next, 2*time.Minute); b.Status != api.StatusSucceeded {
		t.Errorf("build after the flood = %v %q, want succeeded; log:\n%s", b.Status, b.Error, logOf(t, next))
	}
}

// A RUN step that fills the disk faster than the watcher samples meets
// ENOSPC; the build then fails saying the disk filled up, not how the
// executor exited.
func TestManagerDiskFilledByRun(t *testing.T) {
	r := newRestartable(t)
	if err := unix.Mount("tmpfs", r.dir, "tmpfs", 0, "size=96m,mode=0711"); err != nil {
		t.Fatalf("mounting a 96 MiB tmpfs: %v", err)
	}
	// Registered before the Manager's, so it runs after the Manager stops.
	t.Cleanup(func() { unix.Unmount(r.dir, unix.MNT_DETACH) })
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithMinFreeBytes(0), jobs.WithDiskCheckInterval(time.Hour))
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/fill:v1"}},
		busyboxContext(t, base, "dd if=/dev/zero of=/big bs=1M count=200"))
	b := wait(t, j, 2*time.Minute)
	const want = "the disk of the state directory filled up"
	if b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
		t.Errorf("build filling the disk = %v %q, want failed %q; log:\n%s", b.Status, b.Error, want, logOf(t, j))
	}
}

// A RUN step that writes at the speed of the disk (dd, GB/s) into a
// workspace on a disk with less than min_free_bytes free is stopped by
// the disk guard before the disk fills, even though its workspace is
// walked only once an hour here: the statfs between walks sees the
// free space fall. The build fails naming the guard and the setting, and
// the writer never meets ENOSPC.
func TestManagerDiskGuardStopsFastWriter(t *testing.T) {
	r := newRestartable(t)
	const size, minFree = 1 << 30, 768 << 20
	if err := unix.Mount("tmpfs", r.dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0711", size)); err != nil {
		t.Fatalf("mounting a 1 GiB tmpfs: %v", err)
	}
	// Registered before the Manager's, so it runs after the Manager stops.
	t.Cleanup(func() { unix.Unmount(r.dir, unix.MNT_DETACH) })
	base := testenv.Busybox(t, r.reg)
	m, _ := r.start(t, true, jobs.WithMinFreeBytes(minFree), jobs.WithDiskCheckInterval(time.Hour))

	// The least free space while the build runs, sampled far more often
	// than the guard reads it.
	least := make(chan uint64, 1)
	done := make(chan struct{})
	go func() {
		low := uint64(size)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			var st unix.Statfs_t
			if unix.Statfs(r.dir, &st) == nil {
				low = min(low, st.Bavail*uint64(st.Bsize))
			}
			select {
			case <-done:
				least <- low
				return
			case <-tick.C:
			}
		}
	}()
	// 1500 MiB: the disk would be full in well under a second.
	j := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/fill:v1"}},
		busyboxContext(t, base, "dd if=/dev/zero of=/big bs=1M count=1500"))
	b := wait(t, j, 2*time.Minute)
	close(done)
	low := <-least
	l := logOf(t, j)
	t.Logf("least free space during the build: %d MiB", low>>20)
	for _, want := range []string{"disk guard", "min_free_bytes"} {
		if b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
			t.Errorf("build writing 1500 MiB into a 1 GiB disk = %v %q, want failed naming %q; log:\n%s", b.Status, b.Error, want, l)
		}
	}
	if strings.Contains(l, "No space left on device") || strings.Contains(l, "ENOSPC") {
		t.Errorf("the writer met ENOSPC before the guard stopped it; log:\n%s", l)
	}
	if low < minFree/6 {
		t.Errorf("least free space during the build = %d MiB, want at least %d MiB (the guard stops the writer early)", low>>20, minFree/6>>20)
	}
}

// deletedWrite is a RUN step that writes count MiB into a file it has
// deleted but keeps open, where no walk of the workspace sees them.
func deletedWrite(count int) string {
	return fmt.Sprintf("exec 3<>/held && rm /held && dd if=/dev/zero bs=1M count=%d >&3 && echo written", count)
}

// A RUN step that writes past workspace_max_bytes into a file it deleted
// and holds open is stopped as one that writes into a named file, the
// error naming the limit and the deleted files; a build beside it goes
// on. The runner tells the build's processes from its cgroup, or without
// limits from the sandbox's process tree.
func TestManagerWorkspaceLimitDeletedFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kopts []kaniko.Option
	}{
		{"process tree", nil},
		{"cgroup", []kaniko.Option{kaniko.WithLimits(256<<20, 200)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRestartable(t, tc.kopts...)
			base := testenv.Busybox(t, r.reg)
			m, _ := r.start(t, true, jobs.WithConcurrency(2), jobs.WithJobTimeout(2*time.Minute),
				jobs.WithWorkspaceLimit(20<<20), jobs.WithDiskCheckInterval(200*time.Millisecond))
			dest := func(n string) string { return r.reg + "/test/" + n + ":v1" }
			// The sleep keeps the file held, so only the limit can end the
			// build early.
			big := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{dest("held")}},
				busyboxContext(t, base, deletedWrite(50)+" && sleep "+seconds(60*time.Second)))
			normal := submitTo(t, m, "bob", "", api.BuildSpec{Destinations: []string{dest("normal")}},
				busyboxContext(t, base, "echo fine > /fine"))
			start := time.Now()
			b := wait(t, big, 2*time.Minute)
			for _, want := range []string{"the build's workspace exceeded 20 MiB (workspace_max_bytes)", "held in deleted files"} {
				if b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
					t.Errorf("build holding 50 MiB in a deleted file = %v %q, want failed naming %q; log:\n%s", b.Status, b.Error, want, logOf(t, big))
				}
			}
			if took := time.Since(start); took > testenv.Scale(50*time.Second) {
				t.Errorf("the build over its workspace limit took %s to fail, want it stopped before its sleep ends", took)
			}
			if b := wait(t, normal, 2*time.Minute); b.Status != api.StatusSucceeded {
				t.Errorf("normal build beside it = %v %q, want succeeded; log:\n%s", b.Status, b.Error, logOf(t, normal))
			}
		})
	}
}

// Two builds share a small disk; one writes at the speed of the disk,
// into a named file or into one it deleted and holds open, the other
// waits. The guard stops the writer before the disk fills, never the
// build that waits.
func TestManagerDiskGuardStopsOnlyTheWriter(t *testing.T) {
	for _, tc := range []struct {
		name, write string
		want        []string
	}{
		{"named file", "dd if=/dev/zero of=/big bs=1M count=1500", []string{"disk guard", "min_free_bytes"}},
		{"deleted file", deletedWrite(1500), []string{"disk guard", "min_free_bytes", "held in deleted files"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRestartable(t)
			const size, minFree = 1 << 30, 768 << 20
			if err := unix.Mount("tmpfs", r.dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0711", size)); err != nil {
				t.Fatalf("mounting a 1 GiB tmpfs: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(r.dir, unix.MNT_DETACH) })
			base := testenv.Busybox(t, r.reg)
			m, _ := r.start(t, true, jobs.WithConcurrency(2), jobs.WithMinFreeBytes(minFree),
				jobs.WithDiskCheckInterval(200*time.Millisecond))
			idle := submitTo(t, m, "alice", "", api.BuildSpec{Destinations: []string{r.reg + "/test/idle:v1"}},
				busyboxContext(t, base, `echo "wait"ing; sleep 6`))
			for deadline := time.Now().Add(testenv.Scale(time.Minute)); !strings.Contains(logOf(t, idle), "\nwaiting\n"); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) || idle.Snapshot().Status.Final() {
					t.Fatalf("the waiting build never started its RUN step: %v; log:\n%s", idle.Status(), logOf(t, idle))
				}
			}
			// The pause lets the waiting build's workspace be measured
			// (every 0.2 s) before the disk runs low.
			writer := submitTo(t, m, "bob", "", api.BuildSpec{Destinations: []string{r.reg + "/test/fill:v1"}},
				busyboxContext(t, base, "sleep 1; "+tc.write))
			b := wait(t, writer, 2*time.Minute)
			l := logOf(t, writer)
			for _, want := range tc.want {
				if b.Status != api.StatusFailed || !strings.Contains(b.Error, want) {
					t.Errorf("build writing 1500 MiB into a %s on a 1 GiB disk = %v %q, want failed naming %q; log:\n%s", tc.name, b.Status, b.Error, want, l)
				}
			}
			if strings.Contains(l, "No space left on device") {
				t.Errorf("the writer met ENOSPC before the guard stopped it; log:\n%s", l)
			}
			if b := wait(t, idle, 2*time.Minute); b.Status != api.StatusSucceeded {
				t.Errorf("waiting build beside the writer = %v %q, want succeeded; log:\n%s", b.Status, b.Error, logOf(t, idle))
			}
		})
	}
}

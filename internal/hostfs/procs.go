package hostfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Process is one process of the host, told apart from a later one with
// the same pid by its start time.
type Process struct {
	Pid   int
	PPid  int
	Start uint64 // clock ticks after boot
	State byte   // 'R', 'S', 'Z', ...
	Comm  string
}

// Lookup reads process pid's /proc/PID/stat.
func Lookup(pid int) (Process, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Process{}, err
	}
	p, ok := parseStat(b)
	if !ok {
		return Process{}, fmt.Errorf("reading /proc/%d/stat: malformed %q", pid, b)
	}
	return p, nil
}

// parseStat reads "pid (comm) state ppid ... starttime ...".
func parseStat(b []byte) (Process, bool) {
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return Process{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return Process{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); ppid is field 4, starttime field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return Process{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return Process{}, false
	}
	return Process{Pid: pid, PPid: ppid, Start: start, State: f[0][0], Comm: string(b[open+1 : end])}, true
}

// Procs returns the host's processes (those of /proc's pid namespace).
// Processes that end while being read are left out.
func Procs() ([]Process, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("reading /proc: %w", err)
	}
	var ps []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if p, err := Lookup(pid); err == nil {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// Alive reports whether p still runs: the process with its pid started
// when p did and is no zombie.
func (p Process) Alive() bool {
	q, err := Lookup(p.Pid)
	return err == nil && q.Start == p.Start && q.State != 'Z' && q.State != 'X'
}

// Tree returns p and the processes descended from it, or none if p no
// longer runs. In a pid namespace whose init descends from p, that is
// every process of the namespace: orphans are adopted by its init.
func (p Process) Tree() ([]int, error) {
	ps, err := Procs()
	if err != nil {
		return nil, err
	}
	if !p.Alive() {
		return nil, nil
	}
	children := map[int][]int{}
	for _, q := range ps {
		children[q.PPid] = append(children[q.PPid], q.Pid)
	}
	tree := []int{p.Pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}

// Args returns p's command line ("" arguments dropped at the end; nil
// for a kernel thread or a process that ended).
func (p Process) Args() []string {
	return p.nulList("cmdline")
}

// Environ returns p's environment as it started, if it may be read.
func (p Process) Environ() []string {
	return p.nulList("environ")
}

func (p Process) nulList(file string) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.Pid, file))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// Link reads p's cwd, root or exe link: the path, and the device of the
// file system it is on.
func (p Process) Link(name string) (path string, dev uint64, err error) {
	l := fmt.Sprintf("/proc/%d/%s", p.Pid, name)
	var st unix.Stat_t
	if err := unix.Stat(l, &st); err == nil {
		dev = st.Dev
	}
	path, err = os.Readlink(l)
	return path, dev, err
}

// Signal sends sig to p if it is still the process that started at
// p.Start. The process is pinned with a pidfd before its start time is
// checked, so a pid recycled meanwhile is never signalled. A process
// that is gone is no error.
func (p Process) Signal(sig unix.Signal) error {
	return signalIf(p.Pid, sig, func() bool {
		q, err := Lookup(p.Pid)
		return err == nil && q.Start == p.Start
	})
}

// KillIf sends SIGKILL to pid if still() holds once the process is pinned
// (for a pid read from a list, such as a cgroup's cgroup.procs: still
// checks it is listed yet). A pid recycled between the check and the
// kill is never hit: the kill goes to the pinned process or, gone, to
// none.
func KillIf(pid int, still func() bool) error {
	return signalIf(pid, unix.SIGKILL, still)
}

func signalIf(pid int, sig unix.Signal, still func() bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pinning process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !still() {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling process %d: %w", pid, err)
	}
	return nil
}

// Hasten puts every thread of process pid back at nice 0. A killed
// process still has to be scheduled to run its exit, thread by thread: a
// sandbox at nice 19 on a saturated host took more than a teardown's wait
// to go. Call it only after the kill, so that no code of the process runs
// at the raised priority. It needs CAP_SYS_NICE; without it, or for a
// thread that is gone, it does nothing.
func Hasten(pid int) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
		}
	}
}

// KillUnder kills every process (but this one and init) whose working
// directory, root or executable is below one of dirs (not dirs
// themselves: an operator's shell there is no sandbox), and waits up to
// wait for them to go. A process in a mount namespace of its own shows
// such a directory relative to its file system's root ("/ID/root"), not
// under dirs: for a tmpfs mounted at or below one of dirs, the device
// tells instead. It returns the processes it killed.
func KillUnder(wait time.Duration, dirs ...string) []Process {
	var prefixes []string
	var devs []uint64
	for _, d := range dirs {
		prefixes = append(prefixes, strings.TrimSuffix(d, "/")+"/")
		ms, _ := Mounts(d)
		for _, m := range ms {
			// Only a tmpfs's device is its own: a bind mount of a disk
			// would name every process on that disk.
			if m.FSType == "tmpfs" {
				devs = append(devs, unix.Mkdev(uint32(m.Major), uint32(m.Minor)))
			}
		}
	}
	ps, _ := Procs()
	var killed []Process
	self := os.Getpid()
	for _, p := range ps {
		if p.Pid == self || p.Pid == 1 || !p.workingUnder(prefixes, devs) {
			continue
		}
		if p.Signal(unix.SIGKILL) == nil {
			killed = append(killed, p)
		}
	}
	for _, p := range killed {
		if p.Alive() {
			Hasten(p.Pid)
		}
	}
	deadline := time.Now().Add(wait)
	for _, p := range killed {
		for p.Alive() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return killed
}

func (p Process) workingUnder(prefixes []string, devs []uint64) bool {
	for _, l := range []string{"cwd", "root", "exe"} {
		path, dev, err := p.Link(l)
		if dev != 0 && slices.Contains(devs, dev) {
			return true
		}
		if err != nil {
			continue
		}
		for _, pre := range prefixes {
			if strings.HasPrefix(path, pre) {
				return true
			}
		}
	}
	return false
}

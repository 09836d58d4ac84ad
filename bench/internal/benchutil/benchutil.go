// Package benchutil holds what the programs under bench/ share: process
// memory readings from /proc, medians, a logger, and cleanup that also runs
// on SIGINT.
package benchutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/buildgw/buildgw/archive"
	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/internal/hostfs"
	"github.com/buildgw/buildgw/workspace"
)

// Log writes progress to stderr; results go to stdout.
var Log = log.New(os.Stderr, "bench: ", log.Ltime|log.Lmicroseconds)

// SignalContext is cancelled on SIGINT or SIGTERM, so that every deferred
// cleanup of main still runs.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// ModuleRoot finds the repository root (the directory holding go.mod with
// this module) from the working directory upwards.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/buildgw/buildgw\n") {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("run from inside the buildgw repository (go run ./bench/...)")
		}
		d = p
	}
}

// Mem is a process's memory as /proc/PID/status reports it, in bytes.
type Mem struct {
	RSS int64 // VmRSS
	HWM int64 // VmHWM, peak RSS since start or since ResetHWM
}

// ReadMem reads VmRSS and VmHWM of pid.
func ReadMem(pid int) (Mem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	defer f.Close()
	var m Mem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Mem{}, fmt.Errorf("parsing %s of pid %d: %w", k, pid, err)
		}
		if k == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
	}
	return m, sc.Err()
}

// ResetHWM resets pid's VmHWM to its current RSS (clear_refs 5, Linux
// 4.0+; needs to own the process or be root). It reports whether that
// worked; when not, VmHWM stays the peak since the process started.
func ResetHWM(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// Sampler records the highest VmRSS of a process, read every interval.
type Sampler struct {
	stop chan struct{}
	done chan struct{}
	max  int64
	n    int
}

// StartSampler samples pid's VmRSS every interval until Stop.
func StartSampler(pid int, interval time.Duration) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if m, err := ReadMem(pid); err == nil {
				s.n++
				s.max = max(s.max, m.RSS)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the highest VmRSS seen and the number of
// samples.
func (s *Sampler) Stop() (maxRSS int64, samples int) {
	close(s.stop)
	<-s.done
	return s.max, s.n
}

// Median of ds; 0 for none.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MedianInt of xs; 0 for none.
func MedianInt(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]int64(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MaxInt of xs; 0 for none.
func MaxInt(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// Secs formats d as seconds with two decimals.
func Secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// MiB formats bytes as MiB with one decimal.
func MiB(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// Daemon is a long-running child process (a gateway) that is stopped
// with SIGTERM, then SIGKILL, when the benchmark ends.
type Daemon struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartDaemon starts cmd in its own process group, killed if this
// process dies (Pdeathsig).
func StartDaemon(cmd *exec.Cmd) (*Daemon, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &Daemon{Cmd: cmd, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	return d, nil
}

// Exited reports whether the daemon has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Stop asks the daemon to shut down and waits, killing its process group
// if it takes longer than grace.
func (d *Daemon) Stop(grace time.Duration) {
	if d.Exited() {
		return
	}
	syscall.Kill(d.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
		Log.Printf("pid %d did not stop within %s; killing its process group", d.Cmd.Process.Pid, grace)
		syscall.Kill(-d.Cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

// LoadAvg returns the 1, 5 and 15 minute load averages, to show how busy
// the host was.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Tail returns the last n lines of the file at path, for error messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Main runs a benchmark until it ends or is interrupted, and exits 1 with
// one line naming the program if it fails.
func Main(name string, run func(context.Context) error) {
	ctx, stop := SignalContext()
	err := run(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// StampWriter prefixes each line written to W with the seconds since T0,
// so that kept build logs show where the time goes.
type StampWriter struct {
	W       io.Writer
	T0      time.Time
	midLine bool
}

func (s *StampWriter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if !s.midLine {
			b = fmt.Appendf(b, "[%7.2f] ", time.Since(s.T0).Seconds())
			s.midLine = true
		}
		b = append(b, c)
		if c == '\n' {
			s.midLine = false
		}
	}
	if _, err := s.W.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Owner is the part of a runner that tells who its sandbox runs as.
type Owner interface {
	Owner() (uid, gid int, differs bool)
}

// Workspace lays out build i of the project in dir proj under tmp as
// jobs.Manager does: the context (owned by o's sandbox user, with the
// modification times the upload's extraction keeps) and an output
// directory.
func Workspace(o Owner, tmp, proj string, i int, base, host string) (*builder.Request, error) {
	// Made by the workspace package, on disk, as the gateway makes them.
	spaces, err := workspace.New(workspace.NewLayout(tmp))
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("bench-%d", i)
	ws, err := spaces.Create(id, archive.Limits{})
	if err != nil {
		return nil, err
	}
	ctxDir, out := filepath.Join(ws, "context"), filepath.Join(ws, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		return nil, err
	}
	uid, gid, differs := o.Owner()
	err = filepath.WalkDir(proj, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(proj, p)
		dst := filepath.Join(ctxDir, rel)
		if d.IsDir() {
			err = os.Mkdir(dst, 0o755)
		} else {
			var b []byte
			if b, err = os.ReadFile(p); err == nil {
				err = os.WriteFile(dst, b, 0o644)
			}
			if err == nil {
				// As the upload's extraction keeps them.
				if info, ierr := d.Info(); ierr == nil {
					os.Chtimes(dst, info.ModTime(), info.ModTime())
				}
			}
		}
		if err == nil && differs {
			err = os.Lchown(dst, uid, gid)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if differs {
		for _, p := range []string{ws, out} {
			if err := os.Lchown(p, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	args := map[string]string{"BASE": base}
	analysis, err := dockerfile.Load(ctxDir, "Dockerfile", args, "")
	if err != nil {
		return nil, err
	}
	return &builder.Request{ID: id, Workspace: ws, ContextDir: ctxDir, Dockerfile: "Dockerfile",
		Analysis: analysis, BuildArgs: args, OutputDir: out, InsecureRegistries: []string{host}}, nil
}

// RSSUnder sums the VmRSS of every process whose command line or
// environment names a path under dir, and of their descendants: a
// sandbox's unshare (given the job root under the workspace) and the
// executor it starts, or a job daemon's init, dockerd, containerd and
// shims.
func RSSUnder(dir string) int64 {
	ps, _ := hostfs.Procs()
	parent := map[int]int{}
	in := map[int]bool{}
	for _, p := range ps {
		parent[p.Pid] = p.PPid
		for _, a := range append(p.Args(), p.Environ()...) {
			if strings.Contains(a, dir+"/") {
				in[p.Pid] = true
				break
			}
		}
	}
	var sum int64
	for pid := range parent {
		for p, n := pid, 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			if in[p] {
				if m, err := ReadMem(pid); err == nil {
					sum += m.RSS
				}
				break
			}
		}
	}
	return sum
}

// RSSTree sums the VmRSS of pid and all its descendants: a daemon and
// the processes it started (buildkitd and runc, a gateway and its
// sandboxes, a job daemon's init, dockerd, containerd and shims).
func RSSTree(pid int) int64 {
	ps, _ := hostfs.Procs()
	parent := map[int]int{}
	for _, p := range ps {
		parent[p.Pid] = p.PPid
	}
	var sum int64
	for q := range parent {
		for p, n := q, 0; p > 0 && n < 64; p, n = parent[p], n+1 {
			if p == pid {
				if m, err := ReadMem(q); err == nil {
					sum += m.RSS
				}
				break
			}
		}
	}
	return sum
}

// HostDocker runs the docker CLI against one long-lived daemon's socket,
// with a home and an empty client configuration of its own (never the
// host's socket or credentials): what a CI job with a mounted socket runs.
type HostDocker struct {
	docker, socket, dir string
}

// NewHostDocker makes dir/home and dir/client/config.json for the CLI
// docker talking to the daemon at the unix socket path socket.
func NewHostDocker(docker, socket, dir string) (*HostDocker, error) {
	for _, d := range []string{"home", "client"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "client", "config.json"), []byte("{}"), 0o600); err != nil {
		return nil, err
	}
	return &HostDocker{docker: docker, socket: socket, dir: dir}, nil
}

// Run runs docker with args (the legacy builder, DOCKER_BUILDKIT=0), its
// output to out.
func (h *HostDocker) Run(ctx context.Context, out io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, h.docker, append([]string{"--host=unix://" + h.socket}, args...)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(h.dir, "home"),
		"DOCKER_CONFIG=" + filepath.Join(h.dir, "client"),
		"DOCKER_BUILDKIT=0",
	}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd.Run()
}

// Package cgroup bounds the memory and processes of one build sandbox
// with a control group of its own, on cgroup v1 (memory and pids
// hierarchies) or v2 (the unified hierarchy), whichever the host has. A
// sandbox that exceeds its memory is killed by the kernel's OOM killer
// inside its group; one that exceeds its pids cannot fork. Either way only
// that build fails.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/buildgw/buildgw/internal/hostfs"
)

// Version is the cgroup layout of a host.
type Version int

// The layouts Detect tells apart.
const (
	None Version = iota
	V1
	V2
)

func (v Version) String() string {
	switch v {
	case V1:
		return "cgroup v1"
	case V2:
		return "cgroup v2"
	}
	return "no cgroups"
}

// Limits are what one group may use. Zero fields are unbounded.
type Limits struct {
	MemoryBytes int64
	Pids        int64
}

// Manager makes groups under one parent group, named for what holds them.
type Manager struct {
	root    string // the cgroup mount, /sys/fs/cgroup
	parent  string // group holding every job's group, relative to a hierarchy
	version Version
}

// New returns a Manager of groups under parent (a name like
// "buildgw-kaniko") on the host's cgroup layout below root (normally
// /sys/fs/cgroup). Version reports None when the host has neither layout
// usable, so callers can say so instead of failing.
func New(root, parent string) *Manager {
	m := &Manager{root: root, parent: parent}
	switch {
	case exists(filepath.Join(root, "cgroup.controllers")):
		m.version = V2
	case exists(filepath.Join(root, "memory", "memory.limit_in_bytes")) && exists(filepath.Join(root, "pids")):
		m.version = V1
	}
	return m
}

// Version is the layout in use.
func (m *Manager) Version() Version { return m.version }

// Group is one sandbox's control group.
type Group struct {
	version Version
	dirs    []string // v1: memory then pids; v2: the one group
	limits  Limits
}

// Create makes the group name with limits l. It fails on a host without
// cgroups.
func (m *Manager) Create(name string, l Limits) (*Group, error) {
	g := &Group{version: m.version, limits: l}
	switch m.version {
	case V1:
		g.dirs = []string{
			filepath.Join(m.root, "memory", m.parent, name),
			filepath.Join(m.root, "pids", m.parent, name),
		}
	case V2:
		parent := filepath.Join(m.root, m.parent)
		// Only the controllers the limits need: a hybrid host's unified
		// hierarchy has none of those bound to v1, and groups without
		// limits still hold and kill a sandbox.
		var need []string
		if l.MemoryBytes > 0 {
			need = append(need, "memory")
		}
		if l.Pids > 0 {
			need = append(need, "pids")
		}
		if len(need) > 0 {
			have, err := os.ReadFile(filepath.Join(m.root, "cgroup.controllers"))
			if err != nil {
				return nil, fmt.Errorf("reading cgroup controllers: %w", err)
			}
			for _, c := range need {
				if !slices.Contains(strings.Fields(string(have)), c) {
					return nil, fmt.Errorf("cgroup v2 at %s lacks the %s controller (it offers %q; on a hybrid host it is bound to cgroup v1)", m.root, c, strings.TrimSpace(string(have)))
				}
			}
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", parent, err)
		}
		if len(need) > 0 {
			// Children get a controller only if every ancestor passes it on.
			enable := "+" + strings.Join(need, " +")
			for _, d := range []string{m.root, parent} {
				if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(enable), 0o644); err != nil {
					return nil, fmt.Errorf("enabling %s in %s: %w", enable, d, err)
				}
			}
		}
		g.dirs = []string{filepath.Join(parent, name)}
	default:
		return nil, errors.New("this host has no usable cgroups")
	}
	for _, d := range g.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			g.Remove()
			return nil, fmt.Errorf("creating cgroup %s: %w", d, err)
		}
	}
	if err := g.setLimits(); err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

func (g *Group) setLimits() error {
	type setting struct{ dir, file, value string }
	var ss []setting
	if g.version == V1 {
		mem, pids := g.dirs[0], g.dirs[1]
		if l := g.limits.MemoryBytes; l > 0 {
			ss = append(ss, setting{mem, "memory.limit_in_bytes", strconv.FormatInt(l, 10)})
			// With swap the limit would only slow a hog down.
			if exists(filepath.Join(mem, "memory.memsw.limit_in_bytes")) {
				ss = append(ss, setting{mem, "memory.memsw.limit_in_bytes", strconv.FormatInt(l, 10)})
			}
		}
		if l := g.limits.Pids; l > 0 {
			ss = append(ss, setting{pids, "pids.max", strconv.FormatInt(l, 10)})
		}
	} else {
		d := g.dirs[0]
		if l := g.limits.MemoryBytes; l > 0 {
			ss = append(ss, setting{d, "memory.max", strconv.FormatInt(l, 10)}, setting{d, "memory.swap.max", "0"})
		}
		if l := g.limits.Pids; l > 0 {
			ss = append(ss, setting{d, "pids.max", strconv.FormatInt(l, 10)})
		}
	}
	for _, s := range ss {
		if err := os.WriteFile(filepath.Join(s.dir, s.file), []byte(s.value), 0o644); err != nil {
			if s.file == "memory.swap.max" && errors.Is(err, os.ErrNotExist) {
				continue // no swap accounting: no swap to limit
			}
			return fmt.Errorf("setting %s of %s: %w", s.file, s.dir, err)
		}
	}
	return nil
}

// Add moves process pid into the group; the processes it starts
// afterwards are in it too.
func (g *Group) Add(pid int) error {
	for _, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("moving pid %d into cgroup %s: %w", pid, d, err)
		}
	}
	return nil
}

// Exceeded says which limit the group ran into, if any: "memory" when the
// OOM killer killed in it, "pids" when a fork was refused.
func (g *Group) Exceeded() string {
	var memFile, memKey, pidsFile string
	if g.version == V1 {
		memFile, memKey, pidsFile = filepath.Join(g.dirs[0], "memory.oom_control"), "oom_kill", filepath.Join(g.dirs[1], "pids.events")
	} else {
		memFile, memKey, pidsFile = filepath.Join(g.dirs[0], "memory.events"), "oom_kill", filepath.Join(g.dirs[0], "pids.events")
	}
	if n := readKey(memFile, memKey); n > 0 {
		return "memory"
	}
	if n := readKey(pidsFile, "max"); n > 0 {
		return "pids"
	}
	return ""
}

// Procs returns the processes in the group and in the groups below it
// (on cgroup v1, those of its memory hierarchy: every hierarchy holds the
// same ones).
func (g *Group) Procs() []int {
	return procsUnder(g.dirs[0])
}

func procsUnder(dir string) []int {
	out := procs(dir)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, procsUnder(filepath.Join(dir, e.Name()))...)
		}
	}
	return out
}

// Limits returns the group's limits.
func (g *Group) Limits() Limits { return g.limits }

// Remove kills whatever still runs in the group and removes it. It is safe
// to call more than once.
func (g *Group) Remove() error {
	var errs []error
	for _, d := range g.dirs {
		if err := removeTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemovePath kills whatever runs in the group at path (relative to the
// root of each hierarchy, like "/buildgw-dind/JOB") and in the groups
// below it, and removes them all, in every cgroup hierarchy mounted (v1
// has one per controller, v2 one). path must name a group at least two
// levels down, so that a path read from a damaged or hostile state file
// can never tear down the root group or a top-level one.
func RemovePath(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || strings.Count(path, "/") < 2 {
		return fmt.Errorf("refusing to remove cgroup %q: not a clean absolute path at least two levels down", path)
	}
	ms, err := hostfs.MountsOfType("cgroup", "cgroup2")
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if err := removeTree(filepath.Join(m.Mountpoint, path)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTree removes the group at dir and the groups below it, deepest
// first (a group with children cannot be removed), killing what runs in
// each.
func removeTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(append(errs, teardown(dir))...)
}

// teardownWait bounds how long teardown waits for the group's killed
// processes to exit. Killed processes always exit; what they wait for is
// CPU time to run their exit, and a build's processes run niced, so on a
// saturated host that took longer than 5 s.
const teardownWait = time.Minute

// teardown kills every process of the group at dir and removes it. On
// cgroup v2 (Linux 5.14+) cgroup.kill kills them all at once, forks
// included; elsewhere (v1, older kernels) they are killed one by one from
// cgroup.procs until the group is empty, each pinned first and killed
// only if it is still in the group, so a pid recycled meanwhile is never
// hit. Killed processes are put back at nice 0 so that they exit promptly.
func teardown(dir string) error {
	if !exists(dir) {
		return nil
	}
	var errs []error
	if kill := filepath.Join(dir, "cgroup.kill"); exists(kill) {
		if err := os.WriteFile(kill, []byte("1"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("killing cgroup %s: %w", dir, err))
		}
	}
	var err error
	for deadline := time.Now().Add(teardownWait); ; time.Sleep(20 * time.Millisecond) {
		if err = syscall.Rmdir(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			err = nil
			break
		}
		if time.Now().After(deadline) {
			break
		}
		// Busy: processes left (a sandbox that escaped its parent's
		// death, one forked after cgroup.kill was read, or one still
		// exiting). Kill them and wait for the kernel to let go.
		for _, pid := range procs(dir) {
			in := func() bool { return slices.Contains(procs(dir), pid) }
			hostfs.KillIf(pid, in)
			if in() {
				hostfs.Hasten(pid)
			}
		}
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("removing cgroup %s (processes still in it after %s): %w", dir, teardownWait, err))
	}
	return errors.Join(errs...)
}

func procs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// readKey reads "key N" from a flat-keyed cgroup file; 0 if absent.
func readKey(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

//go:build linux

package socketaudit

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ScanHost audits socket on this host, reading processes from procRoot
// (normally /proc), as lsof does: a process holds the socket when one of
// its descriptors is the socket file itself, or a unix socket whose inode
// /proc/net/unix lists under the socket's path (the daemon's listener
// and the connections it accepted), or a unix socket connected to one of
// those (a client: the kernel's sock_diag names its peer). Sockets of
// other network namespaces are seen through their daemon's side only.
func ScanHost(procRoot, socket string) (*HostReport, error) {
	r := &HostReport{Socket: socket, Problems: []string{}, Holders: []Holder{}}
	fi, err := os.Stat(socket)
	if os.IsNotExist(err) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checking %s: %w", socket, err)
	}
	r.Exists = true
	r.Problems = modeProblems(fi, r)

	named, err := socketInodes(filepath.Join(procRoot, "net", "unix"), socket)
	if err != nil {
		return nil, err
	}
	clients := map[string]bool{}
	if peers, err := unixPeers(); err == nil {
		for ino, peer := range peers {
			if named[socketLink(peer)] && !named[socketLink(ino)] {
				clients[socketLink(ino)] = true
			}
		}
	}
	pids, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", procRoot, err)
	}
	for _, e := range pids {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to read
		}
		var held []int
		role := "client"
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if target == socket || named[target] || clients[target] {
				n, _ := strconv.Atoi(fd.Name())
				held = append(held, n)
				if named[target] {
					role = "daemon"
				}
			}
		}
		if len(held) == 0 {
			continue
		}
		sort.Ints(held)
		h := Holder{Role: role, PID: pid, FDs: held, UID: -1}
		if st, err := os.Stat(filepath.Join(procRoot, e.Name())); err == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				h.UID = int(sys.Uid)
				h.User = userName(sys.Uid)
			}
		}
		if b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline")); err == nil {
			h.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		}
		r.Holders = append(r.Holders, h)
	}
	return r, nil
}

// socketInodes returns "socket:[INODE]" for every unix socket bound to
// path in a /proc/net/unix table.
func socketInodes(table, path string) (map[string]bool, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, fmt.Errorf("reading unix sockets: %w", err)
	}
	defer f.Close()
	// A socket bound through a symlink (/var/run -> /run) is listed under
	// the path it was bound with; accept both spellings.
	paths := map[string]bool{path: true}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		paths[real] = true
	}
	for _, p := range []string{path} {
		if strings.HasPrefix(p, "/var/run/") {
			paths[strings.TrimPrefix(p, "/var")] = true
		} else if strings.HasPrefix(p, "/run/") {
			paths["/var"+p] = true
		}
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && paths[fields[7]] {
			out["socket:["+fields[6]+"]"] = true
		}
	}
	return out, sc.Err()
}

func socketLink(ino uint32) string { return "socket:[" + strconv.FormatUint(uint64(ino), 10) + "]" }

func modeProblems(fi os.FileInfo, r *HostReport) []string {
	problems := []string{}
	perm := fi.Mode().Perm()
	r.Mode = fmt.Sprintf("%04o", perm)
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return problems
	}
	r.Owner, r.Group = userName(sys.Uid), groupName(sys.Gid)
	if fi.Mode()&os.ModeSocket == 0 {
		problems = append(problems, fmt.Sprintf("%s is not a socket (%s)", r.Socket, fi.Mode().Type()))
	}
	if perm&0o007 != 0 {
		problems = append(problems, fmt.Sprintf("mode %04o lets every user on the host use the daemon (want 0660)", perm))
	}
	if sys.Uid != 0 {
		problems = append(problems, fmt.Sprintf("owned by %s, not root: that user controls the daemon's socket", r.Owner))
	}
	if perm&0o060 != 0 && sys.Gid != 0 && r.Group != "docker" {
		problems = append(problems, fmt.Sprintf("group %s may use the daemon (want root:docker): its members are root on the host", r.Group))
	}
	return problems
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(uid))
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		return g.Name
	}
	return strconv.Itoa(int(gid))
}

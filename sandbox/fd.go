package sandbox

import (
	"fmt"
	"os"
)

// FD is a file descriptor the runner hands the init, beyond stdin, stdout
// and stderr. The runner builds exec.Cmd.ExtraFiles with ExtraFiles and
// the init opens each with File: both take the numbers from here.
type FD int

const (
	// InNamespace is the write end of a pipe: the init writes one byte
	// once it is in its namespaces, so that the runner can give the
	// network namespace egress (netmode.Egress only).
	InNamespace FD = 3 + iota
	// NetworkReady is the read end of a pipe: the runner writes one byte
	// once the network is set up (netmode.Egress only).
	NetworkReady
	// Release is the read end of a pipe: the runner writes one byte once
	// the process is in the build's cgroup (EnvHold only).
	Release

	lastFD = Release
)

// String names fd as the init's /proc/self/fd shows it in errors.
func (fd FD) String() string {
	switch fd {
	case InNamespace:
		return "in-namespace"
	case NetworkReady:
		return "network-ready"
	case Release:
		return "release"
	}
	return fmt.Sprintf("fd %d", int(fd))
}

// File returns the inherited descriptor fd, for the init.
func (fd FD) File() *os.File { return os.NewFile(uintptr(fd), fd.String()) }

// ExtraFiles returns exec.Cmd.ExtraFiles that give the child each file of
// files at its FD. Descriptors files does not name are left closed in the
// child (a nil entry).
func ExtraFiles(files map[FD]*os.File) ([]*os.File, error) {
	extra := make([]*os.File, lastFD-InNamespace+1)
	for fd, f := range files {
		if fd < InNamespace || fd > lastFD {
			return nil, fmt.Errorf("file descriptor %d is not one the sandbox takes", int(fd))
		}
		extra[fd-InNamespace] = f
	}
	return extra, nil
}

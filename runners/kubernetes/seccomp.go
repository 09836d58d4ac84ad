package kubernetes

import (
	"encoding/json"
	"slices"

	"github.com/docker/docker/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// SeccompProfileName is the Localhost profile the runner's Pods use by
// default: SeccompProfile, installed on every node at
// <kubelet root>/seccomp/buildgw-kaniko.json.
const SeccompProfileName = "buildgw-kaniko.json"

// sandboxSyscalls are what the build's sandbox needs beyond the runtime's
// default profile, which grants them only with CAP_SYS_ADMIN (the Pod has
// no capability at all): entering user, mount, pid, IPC, UTS and network
// namespaces of its own (clone and unshare with namespace flags), laying
// out its root inside them (mount, umount2, pivot_root) and naming its
// host (sethostname). The kernel allows each only inside the namespaces
// the Pod's user made, where it is root over nothing of the node's.
var sandboxSyscalls = []string{"clone", "unshare", "mount", "umount", "umount2", "pivot_root", "sethostname", "setdomainname"}

// SeccompProfile returns the Localhost seccomp profile of the runner's
// Pods: the runtime's default (Docker's, of the moby version this module
// pins, which is containerd's too) plus sandboxSyscalls. RuntimeDefault
// itself refuses the sandbox (unshare(CLONE_NEWUSER|...): operation not
// permitted). Inside the sandbox the executor's init installs its own,
// narrower filter (runners/kaniko/sandboxinit) before kaniko starts.
func SeccompProfile() ([]byte, error) {
	p := seccomp.DefaultProfile()
	var rules []*seccomp.Syscall
	for _, s := range p.Syscalls {
		// The clone rules that allow clone only without namespace flags
		// make way for the plain rule below.
		if slices.Equal(s.Names, []string{"clone"}) && s.Excludes != nil && slices.Contains(s.Excludes.Caps, "CAP_SYS_ADMIN") {
			continue
		}
		rules = append(rules, s)
	}
	rules = append(rules, &seccomp.Syscall{LinuxSyscall: specs.LinuxSyscall{Names: sandboxSyscalls, Action: specs.ActAllow}})
	p.Syscalls = rules
	return json.MarshalIndent(p, "", "\t")
}

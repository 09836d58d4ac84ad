package testcluster

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NetNS is the network namespace of the cluster's containerd, where the
// Pods' bridge and addresses live (scripts/cluster).
const NetNS = "buildgw-cluster"

// PodCIDR is the Pods' network in NetNS.
const PodCIDR = "10.88.0.0/16"

// stateDir is scripts/cluster's state directory, which holds the
// kubeconfig.
func (c *Cluster) stateDir() string { return filepath.Dir(c.Kubeconfig) }

// ImportImage imports the image tarball at path (docker save's or an OCI
// archive) into the cluster's containerd, for Pods with imagePullPolicy
// Never or IfNotPresent.
func (c *Cluster) ImportImage(t testing.TB, path string) {
	t.Helper()
	if err := c.Import(path); err != nil {
		t.Fatal(err)
	}
}

// Import is ImportImage for programs that have no testing.TB.
func (c *Cluster) Import(path string) error {
	sock := filepath.Join(c.stateDir(), "run", "containerd.sock")
	out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "images", "import", "--all-platforms", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing %s into the cluster's containerd: %w\n%s", path, err, out)
	}
	return nil
}

// InstallSeccompProfile writes a Localhost seccomp profile named name
// into the kubelet's seccomp directory, for Pods'
// seccompProfile.localhostProfile.
func (c *Cluster) InstallSeccompProfile(t testing.TB, name string, body []byte) {
	t.Helper()
	if err := c.InstallProfile(name, body); err != nil {
		t.Fatal(err)
	}
}

// InstallProfile is InstallSeccompProfile for programs that have no
// testing.TB.
func (c *Cluster) InstallProfile(name string, body []byte) error {
	dir := filepath.Join(c.stateDir(), "kubelet", "seccomp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), body, 0o644)
}

// HostLink connects the host to the Pods' network namespace with a veth
// pair on a private /30 of 10.99.0.0/16 (random, so that parallel tests
// do not collide), with a route to the Pods through it, and returns the
// host end's address: a server listening there is reachable from Pods,
// and from nothing else outside the host. The test's cleanup removes the
// pair, and with it the route.
func (c *Cluster) HostLink(t testing.TB) string {
	t.Helper()
	ip, remove, err := c.Link()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Error(err)
		}
	})
	return ip
}

// Link is HostLink for programs that have no testing.TB: the caller
// must call remove.
func (c *Cluster) Link() (hostIP string, remove func() error, err error) {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	n := binary.BigEndian.Uint16(b[:]) &^ 3
	hostIP = fmt.Sprintf("10.99.%d.%d", n>>8, n&0xff|1)
	nsIP := fmt.Sprintf("10.99.%d.%d", n>>8, n&0xff|2)
	hostIf, nsIf := fmt.Sprintf("bgwk%04x", n), fmt.Sprintf("bgwp%04x", n)
	// The namespace by containerd's pid rather than by its name: the
	// name is a bind mount under /run/netns, which other programs'
	// clean-ups have been seen to unmount.
	pidb, err := os.ReadFile(filepath.Join(c.stateDir(), "run", "containerd.pid"))
	if err != nil {
		return "", nil, fmt.Errorf("finding the cluster's containerd: %w", err)
	}
	pid := strings.TrimSpace(string(pidb))
	nsPath := "/proc/" + pid + "/ns/net"
	run := func(args ...string) error {
		cmd := exec.Command("ip", args...)
		if args[0] == "-n" {
			cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, "ip"}, args[2:]...)...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
		}
		return nil
	}
	if err := run("link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", pid); err != nil {
		return "", nil, err
	}
	remove = func() error {
		if out, err := exec.Command("ip", "link", "del", hostIf).CombinedOutput(); err != nil {
			return fmt.Errorf("removing the host link %s: %w\n%s", hostIf, err, out)
		}
		return nil
	}
	for _, args := range [][]string{
		{"addr", "add", hostIP + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", NetNS, "addr", "add", nsIP + "/30", "dev", nsIf},
		{"-n", NetNS, "link", "set", nsIf, "up"},
		// Appended, not added: another test's link may hold the route already.
		// The kernel uses the first, and the next when the first's link goes.
		{"route", "append", PodCIDR, "via", nsIP, "dev", hostIf},
	} {
		if err := run(args...); err != nil {
			remove()
			return "", nil, err
		}
	}
	return hostIP, remove, nil
}

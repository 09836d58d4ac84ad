// Package deploy_test checks the deployment examples: the Kubernetes
// manifests rendered from their Kustomize overlays, against the API types
// (unknown or misspelt fields are errors) and what each overlay promises,
// and their RBAC on a real API server; the seccomp profile against
// Docker's default, the systemd unit with systemd-analyze, and the
// compose file and README against the documented docker run options.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/gateway"
)

// sandboxSyscalls are what seccomp.json allows beyond Docker's default.
var sandboxSyscalls = []string{"mount", "umount2", "pivot_root", "unshare", "sethostname"}

// documentedOptions are the docker run options README.md documents.
var documentedOptions = []string{
	"--cap-drop=ALL", "--cap-add=SETUID", "--cap-add=SETGID",
	"--security-opt seccomp=examples/deploy/seccomp.json",
	"--security-opt systempaths=unconfined",
	"--network=host",
}

// TestSeccompProfile checks that seccomp.json is Docker's default profile
// (of the Docker version this module pins) plus one rule that allows what
// a build sandbox calls, and that Docker accepts it for a container with
// the documented capabilities.
func TestSeccompProfile(t *testing.T) {
	b, err := os.ReadFile("seccomp.json")
	if err != nil {
		t.Fatal(err)
	}
	var got seccomp.Seccomp
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("seccomp.json: %v", err)
	}
	want := seccomp.DefaultProfile()
	if n := len(got.Syscalls); n != len(want.Syscalls)+1 {
		t.Fatalf("seccomp.json has %d rules, want Docker's %d plus one", n, len(want.Syscalls))
	}
	extra := got.Syscalls[len(got.Syscalls)-1]
	got.Syscalls = got.Syscalls[:len(got.Syscalls)-1]
	// Compare as JSON, as Docker reads it.
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Errorf("seccomp.json without its last rule differs from Docker's default profile: regenerate it from profiles/seccomp/default.json")
	}
	if extra.Action != "SCMP_ACT_ALLOW" || !slices.Equal(extra.Names, sandboxSyscalls) || len(extra.Args) != 0 || extra.Includes != nil || extra.Excludes != nil {
		t.Errorf("extra rule = %+v, want an unconditional allow of %v", extra, sandboxSyscalls)
	}

	// Docker loads it; the calls are allowed without CAP_SYS_ADMIN.
	spec := specWithCaps("CAP_SETUID", "CAP_SETGID")
	ls, err := seccomp.LoadProfile(string(b), spec)
	if err != nil {
		t.Fatalf("LoadProfile(seccomp.json) = %v", err)
	}
	allowed := map[string]bool{}
	for _, s := range ls.Syscalls {
		if s.Action == "SCMP_ACT_ALLOW" && len(s.Args) == 0 {
			for _, n := range s.Names {
				allowed[n] = true
			}
		}
	}
	for _, n := range sandboxSyscalls {
		if !allowed[n] {
			t.Errorf("%s is not allowed for a container with only SETUID and SETGID", n)
		}
	}
	// Docker's default alone does not allow them: the profile is needed.
	def, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range def.Syscalls {
		for _, n := range s.Names {
			if s.Action == "SCMP_ACT_ALLOW" && len(s.Args) == 0 && slices.Contains(sandboxSyscalls, n) {
				t.Errorf("Docker's default profile already allows %s; seccomp.json may be unnecessary", n)
			}
		}
	}
}

// TestSystemdUnit runs systemd-analyze verify on the unit and checks the
// settings README.md explains.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("buildgw.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	settings := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = v
		}
	}
	for k, want := range map[string]string{
		"User":               "buildgw",
		"NoNewPrivileges":    "no",
		"ProtectSystem":      "strict",
		"ProtectHome":        "yes",
		"PrivateTmp":         "yes",
		"StateDirectory":     "buildgw",
		"StateDirectoryMode": "0711",
	} {
		if got := settings[k]; got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	// Each of these makes systemd set no_new_privs for a non-root service,
	// and then newuidmap cannot work.
	for _, k := range []string{"SystemCallFilter", "SystemCallArchitectures", "RestrictAddressFamilies", "RestrictNamespaces",
		"PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectClock",
		"MemoryDenyWriteExecute", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "DynamicUser"} {
		if _, ok := settings[k]; ok {
			t.Errorf("%s is set; it implies NoNewPrivileges=yes for a non-root service", k)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: run scripts/setup --test (it installs systemd)")
	}
	// verify wants ExecStart's binary to exist.
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "buildgw.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/buildgw", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify buildgw.service: %v\n%s", err, out)
	}
}

// TestDocumentedOptions checks that README.md and compose.yaml give the
// same docker run options (the end-to-end test runs the image with them).
func TestDocumentedOptions(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range documentedOptions {
		if !bytes.Contains(readme, []byte(o)) {
			t.Errorf("README.md does not document %q", o)
		}
	}
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			NetworkMode     string   `yaml:"network_mode"`
			CapDrop         []string `yaml:"cap_drop"`
			CapAdd          []string `yaml:"cap_add"`
			SecurityOpt     []string `yaml:"security_opt"`
			Privileged      bool     `yaml:"privileged"`
			Volumes         []string `yaml:"volumes"`
			StopGracePeriod string   `yaml:"stop_grace_period"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	s, ok := compose.Services["buildgw"]
	if !ok {
		t.Fatal("compose.yaml has no buildgw service")
	}
	var opts []string
	for _, c := range s.CapDrop {
		opts = append(opts, "--cap-drop="+c)
	}
	for _, c := range s.CapAdd {
		opts = append(opts, "--cap-add="+c)
	}
	for _, o := range s.SecurityOpt {
		opts = append(opts, "--security-opt "+strings.Replace(o, "./seccomp.json", "examples/deploy/seccomp.json", 1))
	}
	opts = append(opts, "--network="+s.NetworkMode)
	if !slices.Equal(opts, documentedOptions) || s.Privileged {
		t.Errorf("compose.yaml options = %q (privileged %v), want %q", opts, s.Privileged, documentedOptions)
	}

	// The state is a named volume, which outlives the container, and the
	// container gets time to drain on stop.
	stateDir := gateway.DefaultConfig().StateDir
	named := false
	for _, v := range s.Volumes {
		src, dst, _ := strings.Cut(v, ":")
		dst, _, _ = strings.Cut(dst, ":")
		if _, ok := compose.Volumes[src]; ok && dst == stateDir {
			named = true
		}
	}
	if !named {
		t.Errorf("compose.yaml volumes = %q, want a named volume at %s", s.Volumes, stateDir)
	}
	grace := time.Duration(gateway.DefaultConfig().ShutdownGrace)
	if d, err := time.ParseDuration(s.StopGracePeriod); err != nil || d < grace+15*time.Second {
		t.Errorf("compose.yaml stop_grace_period = %q, want at least shutdown_grace (%s) + 15s", s.StopGracePeriod, grace)
	}
}

// specWithCaps is the runtime spec of a container with these capabilities,
// as Docker passes it to its seccomp profile loader.
func specWithCaps(caps ...string) *specs.Spec {
	return &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
	}}}
}

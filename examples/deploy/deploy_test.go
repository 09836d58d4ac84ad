// Package deploy_test checks the deployment examples offline: the
// Kubernetes manifests against the API types (unknown or misspelt fields
// are errors) and against what the image needs, the seccomp profile
// against Docker's default, the systemd unit with systemd-analyze, and the
// compose file and README against the documented docker run options.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/policy"
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

// loadManifests decodes every document of the file strictly into its API
// type.
func loadManifests(t *testing.T, file string) manifests {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifests(t, file, b)
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t, "kubernetes/buildgw.yaml")
	d := m.deployment
	pod := d.Spec.Template.Spec
	labels := d.Spec.Template.Labels
	for k, v := range d.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("deployment selector %s=%s does not match the pod labels %v", k, v, labels)
		}
	}
	for k, v := range m.service.Spec.Selector {
		if labels[k] != v {
			t.Errorf("service selector %s=%s does not match the pod labels %v", k, v, labels)
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("containers = %d, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, p := range m.service.Spec.Ports {
		if _, ok := ports[p.TargetPort.String()]; !ok {
			t.Errorf("service port %s targets %s, which the container does not expose (%v)", p.Name, p.TargetPort.String(), ports)
		}
	}

	// What rootless builds need, as README.md explains.
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("pod and container need a securityContext")
	}
	if pod.HostUsers == nil || *pod.HostUsers {
		t.Errorf("hostUsers = %v, want false (procMount Unmasked needs a pod user namespace)", pod.HostUsers)
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 10001 {
		t.Errorf("pod runAsNonRoot/runAsUser = %v/%v, want true/10001 (the image's buildgw user)", psc.RunAsNonRoot, psc.RunAsUser)
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || sp.LocalhostProfile == nil || path.Base(*sp.LocalhostProfile) != "seccomp.json" {
		t.Errorf("seccompProfile = %+v, want Localhost .../seccomp.json", sp)
	}
	if ap := psc.AppArmorProfile; ap == nil || ap.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("appArmorProfile = %+v, want Unconfined", ap)
	}
	if sc.AllowPrivilegeEscalation == nil || !*sc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation = %v, want true (no_new_privs disables newuidmap's file capabilities)", sc.AllowPrivilegeEscalation)
	}
	if sc.ProcMount == nil || *sc.ProcMount != corev1.UnmaskedProcMount {
		t.Errorf("procMount = %v, want Unmasked", sc.ProcMount)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("container is privileged")
	}
	if caps := sc.Capabilities; caps == nil || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(caps.Add, []corev1.Capability{"SETUID", "SETGID"}) {
		t.Errorf("capabilities = %+v, want drop [ALL], add [SETUID SETGID]", caps)
	}

	// Every mounted volume exists and points at objects in the file; the
	// configuration's paths are where the volumes are mounted.
	mounts := map[string]string{} // volume name -> mount path
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	files := map[string][]byte{} // path in the container -> content
	for _, v := range pod.Volumes {
		dir, ok := mounts[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		delete(mounts, v.Name)
		switch {
		case v.ConfigMap != nil:
			cm := m.configMaps[key(d.Namespace, v.ConfigMap.Name)]
			if cm == nil {
				t.Errorf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
				continue
			}
			for _, it := range v.ConfigMap.Items {
				data, ok := cm.Data[it.Key]
				if !ok {
					t.Errorf("volume %s: ConfigMap %s has no key %s", v.Name, cm.Name, it.Key)
				}
				files[path.Join(dir, it.Path)] = []byte(data)
			}
		case v.Secret != nil:
			s := m.secrets[key(d.Namespace, v.Secret.SecretName)]
			if s == nil {
				t.Errorf("volume %s: no Secret %s", v.Name, v.Secret.SecretName)
				continue
			}
			for k, val := range s.Data {
				files[path.Join(dir, k)] = val
			}
			for k, val := range s.StringData {
				files[path.Join(dir, k)] = []byte(val)
			}
		}
	}
	for name := range mounts {
		t.Errorf("volume mount %s has no volume", name)
	}
	cfgPath := c.Args[len(c.Args)-1]
	raw, ok := files[cfgPath]
	if !ok {
		t.Fatalf("config %s (from the container's args) is not in any volume", cfgPath)
	}
	cfg := gateway.DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decoding %s = %v, want nil", cfgPath, err)
	}
	pol, ok := files[cfg.PolicyFile]
	if !ok {
		t.Errorf("policy_file %s is not in any volume", cfg.PolicyFile)
	} else if _, err := policy.Parse(pol); err != nil {
		t.Errorf("policy %s: %v", cfg.PolicyFile, err)
	}
	want := []string{cfg.TLS.CertFile, cfg.TLS.KeyFile}
	for _, r := range cfg.Registries {
		want = append(want, r.PasswordFile)
	}
	for _, p := range want {
		if _, ok := files[p]; !ok {
			t.Errorf("%s, named in the configuration, is not in any volume", p)
		}
	}
	if cfg.StateDir != mounts["state"] && !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == cfg.StateDir }) {
		t.Errorf("state_dir %s is not a mounted volume", cfg.StateDir)
	}
	// The pod cannot mount; workspaces are in memory only through a
	// memory-backed volume at state_dir/mem.
	memory := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if vm.MountPath == path.Join(cfg.StateDir, "mem") && v.Name == vm.Name && v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory {
				memory = true
			}
		}
	}
	if !memory {
		t.Errorf("no memory-backed emptyDir at %s/mem: workspaces stay on disk", cfg.StateDir)
	}

	// The state directory outlives the pod: a claim in this file, one pod
	// at a time on it (the gateway locks it), and time to drain on stop.
	var state *corev1.Volume
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == cfg.StateDir {
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == vm.Name {
					state = &pod.Volumes[i]
				}
			}
		}
	}
	switch {
	case state == nil:
		t.Errorf("no volume at state_dir %s", cfg.StateDir)
	case state.PersistentVolumeClaim == nil:
		t.Errorf("state_dir %s is volume %s, not a persistentVolumeClaim: anything else loses every build with the pod", cfg.StateDir, state.Name)
	case m.claims[key(d.Namespace, state.PersistentVolumeClaim.ClaimName)] == nil:
		t.Errorf("state volume claims %s, which the file does not define", state.PersistentVolumeClaim.ClaimName)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("deployment strategy %q, replicas %v, want Recreate and 1: a second pod cannot use the state directory", d.Spec.Strategy.Type, d.Spec.Replicas)
	}
	grace := time.Duration(cfg.ShutdownGrace)
	if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second < grace+15*time.Second {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least shutdown_grace (%s) + 15s, so that the gateway drains before it is killed", pod.TerminationGracePeriodSeconds, grace)
	}
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

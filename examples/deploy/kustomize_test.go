package deploy_test

import (
	"fmt"
	"net"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	buildgwcmd "github.com/buildgw/buildgw/cmd/buildgw/cmd"
	"github.com/buildgw/buildgw/gateway"
	"github.com/buildgw/buildgw/policy"
	"github.com/buildgw/buildgw/runners/kubernetes"
)

// overlays are the kustomizations an operator picks from
// (kubernetes/README.md).
var overlays = []struct {
	dir        string
	replicated bool
	inPod      bool // builds in the gateway's Pod, not as Pods
}{
	{"base", false, false},
	{"overlays/replicated", true, false},
	{"overlays/in-pod", false, true},
}

// runnerRules are exactly the calls runners/kubernetes makes, in its
// namespace (kubernetes.go), plus get beside list.
var runnerRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create", "get", "list", "watch", "delete"}},
	{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
	{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"create", "get", "list", "update", "delete"}},
}

// gatewayConfig is what the rendered Deployment runs with: its
// configuration, the files its volumes hold, where they are mounted.
type gatewayConfig struct {
	cfg     gateway.Config
	dsnFile string
	files   map[string][]byte // path in the container -> content
	mounts  map[string]string // mount path -> volume name
	volumes map[string]corev1.Volume
}

// TestKustomize renders every overlay, with and without the
// ServiceMonitor component, and checks what each promises: the gateway
// Pod's privileges and probes, the build namespace's RBAC and network
// policies, the replicas, their disruption budget and job store.
func TestKustomize(t *testing.T) {
	for _, o := range overlays {
		for _, monitored := range []bool{false, true} {
			name := o.dir
			var comps []string
			if monitored {
				comps = []string{"components/servicemonitor"}
				name += "+servicemonitor"
			}
			t.Run(name, func(t *testing.T) {
				m := decodeManifests(t, name, render(t, o.dir, comps...))
				g := checkGateway(t, m)
				if o.inPod {
					checkInPod(t, m, g)
				} else {
					checkPodRunner(t, m, g)
					checkRBAC(t, m, g)
					checkQuota(t, m, g)
					checkNetworkPolicies(t, m, g)
				}
				checkReplicas(t, m, g, o.replicated)
				checkServiceMonitor(t, m, g, monitored)
			})
		}
	}
}

// checkGateway checks what every overlay's gateway needs: selectors that
// match, ports, the configuration and every file it names in a volume,
// probes, and time to drain on stop.
func checkGateway(t *testing.T, m manifests) gatewayConfig {
	t.Helper()
	d := m.deployment
	pod := d.Spec.Template.Spec
	lbls := d.Spec.Template.Labels
	if !selects(d.Spec.Selector, lbls) {
		t.Errorf("deployment selector %v does not match the pod labels %v", d.Spec.Selector, lbls)
	}
	if m.service.Namespace != d.Namespace || !selects(&metav1.LabelSelector{MatchLabels: m.service.Spec.Selector}, lbls) {
		t.Errorf("service %s/%s selector %v does not select the pods %s/%v", m.service.Namespace, m.service.Name, m.service.Spec.Selector, d.Namespace, lbls)
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

	g := gatewayConfig{files: map[string][]byte{}, mounts: map[string]string{}, volumes: map[string]corev1.Volume{}}
	for _, vm := range c.VolumeMounts {
		g.mounts[vm.MountPath] = vm.Name
	}
	mounted := map[string]string{} // volume name -> mount path
	for _, vm := range c.VolumeMounts {
		mounted[vm.Name] = vm.MountPath
	}
	for _, v := range pod.Volumes {
		g.volumes[v.Name] = v
		dir, ok := mounted[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		delete(mounted, v.Name)
		switch {
		case v.ConfigMap != nil:
			cm := m.configMaps[key(d.Namespace, v.ConfigMap.Name)]
			if cm == nil {
				t.Errorf("volume %s: no ConfigMap %s in %s", v.Name, v.ConfigMap.Name, d.Namespace)
				continue
			}
			for _, it := range v.ConfigMap.Items {
				data, ok := cm.Data[it.Key]
				if !ok {
					t.Errorf("volume %s: ConfigMap %s has no key %s", v.Name, cm.Name, it.Key)
				}
				g.files[path.Join(dir, it.Path)] = []byte(data)
			}
		case v.Secret != nil:
			s := m.secrets[key(d.Namespace, v.Secret.SecretName)]
			if s == nil {
				t.Errorf("volume %s: no Secret %s in %s", v.Name, v.Secret.SecretName, d.Namespace)
				continue
			}
			for k, val := range s.Data {
				g.files[path.Join(dir, k)] = val
			}
			for k, val := range s.StringData {
				g.files[path.Join(dir, k)] = []byte(val)
			}
		}
	}
	for name := range mounted {
		t.Errorf("volume mount %s has no volume", name)
	}

	// The arguments are the real command's: the image's entrypoint is
	// buildgw.
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %q, want buildgw serve", c.Args)
	}
	if err := buildgwcmd.NewCmdServe().ParseFlags(c.Args[1:]); err != nil {
		t.Errorf("buildgw serve %q: %v", c.Args[1:], err)
	}
	cfgPath := flagValue(c.Args, "--config")
	raw, ok := g.files[cfgPath]
	if !ok {
		t.Fatalf("config %q (--config in the container's args %q) is not in any volume", cfgPath, c.Args)
	}
	g.cfg, g.dsnFile = decodeConfig(t, cfgPath, raw)
	cfg := g.cfg
	pol, ok := g.files[cfg.PolicyFile]
	if !ok {
		t.Errorf("policy_file %s is not in any volume", cfg.PolicyFile)
	} else if _, err := policy.Parse(pol); err != nil {
		t.Errorf("policy %s: %v", cfg.PolicyFile, err)
	}
	want := []string{cfg.TLS.CertFile, cfg.TLS.KeyFile}
	for _, r := range cfg.Registries {
		want = append(want, r.PasswordFile)
	}
	if g.dsnFile != "" {
		want = append(want, g.dsnFile)
	}
	for _, p := range want {
		if _, ok := g.files[p]; !ok {
			t.Errorf("%s, named in the configuration, is not in any volume", p)
		}
	}
	if _, ok := g.mounts[cfg.StateDir]; !ok {
		t.Errorf("state_dir %s is not a mounted volume", cfg.StateDir)
	}

	apiPort := ports["https"]
	if _, p, _ := net.SplitHostPort(cfg.Listen); p != strconv.Itoa(int(apiPort)) {
		t.Errorf("listen %s, container port https %d: want the same port", cfg.Listen, apiPort)
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("%s probe = %+v, want GET %s", pr.name, pr.probe, pr.path)
			continue
		}
		h := pr.probe.HTTPGet
		if h.Path != pr.path || h.Port.String() != "https" || h.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s probe = %s %s %s, want HTTPS https %s (unauthenticated, over the API's TLS)", pr.name, h.Scheme, h.Port.String(), h.Path, pr.path)
		}
	}
	grace := time.Duration(cfg.ShutdownGrace)
	if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second < grace+15*time.Second {
		t.Errorf("terminationGracePeriodSeconds = %s, want at least shutdown_grace (%s) + 15s, so that the gateway drains before it is killed", deref(pod.TerminationGracePeriodSeconds), grace)
	}
	return g
}

// checkPodRunner checks a gateway whose builds run as Pods: it needs no
// privilege at all, and its data server is reachable at its Pod's
// address.
func checkPodRunner(t *testing.T, m manifests, g gatewayConfig) {
	t.Helper()
	k := g.cfg.Runners.Kubernetes
	if !k.Enabled {
		t.Fatal("runners.kubernetes.enabled = false, want true")
	}
	if !g.cfg.Runners.Dind.Disabled {
		t.Error("runners.dind.disabled = false: the gateway Pod cannot run per-job daemons")
	}
	d := m.deployment
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("pod and container need a securityContext")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 10001 {
		t.Errorf("pod runAsNonRoot/runAsUser = %v/%v, want true/10001 (the image's buildgw user)", psc.RunAsNonRoot, psc.RunAsUser)
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", sp)
	}
	if pod.HostUsers != nil || pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("hostUsers %v, hostNetwork %v, hostPID %v, hostIPC %v: want none set", pod.HostUsers, pod.HostNetwork, pod.HostPID, pod.HostIPC)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation = %s, want false", deref(sc.AllowPrivilegeEscalation))
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem = %s, want true", deref(sc.ReadOnlyRootFilesystem))
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("container is privileged")
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		t.Errorf("procMount = %v, want Default", *sc.ProcMount)
	}
	if caps := sc.Capabilities; caps == nil || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) || len(caps.Add) != 0 {
		t.Errorf("capabilities = %+v, want drop [ALL], add none", caps)
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
	}

	// The ServiceAccount's token reaches the gateway Pod, which asks for
	// it, and no other Pod that names the account.
	sa := m.serviceAccounts[key(d.Namespace, pod.ServiceAccountName)]
	switch {
	case pod.ServiceAccountName == "" || sa == nil:
		t.Errorf("serviceAccountName %q: want a ServiceAccount of the gateway's own in %s", pod.ServiceAccountName, d.Namespace)
	case sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken:
		t.Errorf("ServiceAccount %s automountServiceAccountToken = %s, want false (the Pod asks for it)", sa.Name, deref(sa.AutomountServiceAccountToken))
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Errorf("gateway pod automountServiceAccountToken = %s, want true: the kubernetes runner's in-cluster credentials", deref(pod.AutomountServiceAccountToken))
	}
	ns := runnerNamespace(g.cfg)
	if def := m.serviceAccounts[key(ns, "default")]; def == nil || def.AutomountServiceAccountToken == nil || *def.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %s/default = %+v, want automountServiceAccountToken false: build Pods run as it", ns, def)
	}
	for _, n := range []string{d.Namespace, ns} {
		if nso := m.namespaces[n]; nso == nil || nso.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s = %+v, want one that enforces the restricted Pod Security Standard", n, nso)
		}
	}

	// The data server listens on the Pod's address, which build Pods
	// reach it by.
	_, dataPort, err := net.SplitHostPort(k.DataListen)
	if err != nil {
		t.Fatalf("runners.kubernetes.data_listen %q: %v", k.DataListen, err)
	}
	if got, want := flagValue(c.Args, "--kubernetes-data-url"), "https://$(POD_IP):"+dataPort; got != want {
		t.Errorf("--kubernetes-data-url = %q, want %q", got, want)
	}
	if !hasFieldEnv(c, "POD_IP", "status.podIP") {
		t.Errorf("env = %+v, want POD_IP from status.podIP", c.Env)
	}
	if p := containerPort(c, "data"); strconv.Itoa(int(p)) != dataPort {
		t.Errorf("container port data = %d, want data_listen's %s", p, dataPort)
	}
	for _, sp := range m.service.Spec.Ports {
		if sp.TargetPort.String() == "data" || sp.TargetPort.IntValue() == containerPort(c, "data") {
			t.Errorf("service port %s exposes the data server, which only build Pods reach, by the Pod's address", sp.Name)
		}
	}
}

// checkInPod checks a gateway that builds in its own Pod: what rootless
// sandboxes need there (README.md), and no access to the cluster's API.
func checkInPod(t *testing.T, m manifests, g gatewayConfig) {
	t.Helper()
	if g.cfg.Runners.Kubernetes.Enabled {
		t.Error("runners.kubernetes.enabled: builds run in the gateway's Pod here")
	}
	pod := m.deployment.Spec.Template.Spec
	c := pod.Containers[0]
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("pod and container need a securityContext")
	}
	if pod.HostUsers == nil || *pod.HostUsers {
		t.Errorf("hostUsers = %s, want false (procMount Unmasked needs a pod user namespace)", deref(pod.HostUsers))
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 10001 {
		t.Errorf("pod runAsNonRoot/runAsUser = %s/%s, want true/10001 (the image's buildgw user)", deref(psc.RunAsNonRoot), deref(psc.RunAsUser))
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || sp.LocalhostProfile == nil || path.Base(*sp.LocalhostProfile) != "seccomp.json" {
		t.Errorf("seccompProfile = %+v, want Localhost .../seccomp.json", sp)
	}
	if ap := psc.AppArmorProfile; ap == nil || ap.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("appArmorProfile = %+v, want Unconfined", ap)
	}
	if sc.AllowPrivilegeEscalation == nil || !*sc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation = %s, want true (no_new_privs disables newuidmap's file capabilities)", deref(sc.AllowPrivilegeEscalation))
	}
	if sc.ProcMount == nil || *sc.ProcMount != corev1.UnmaskedProcMount {
		t.Errorf("procMount = %s, want Unmasked", deref(sc.ProcMount))
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("container is privileged")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem = %s, want true", deref(sc.ReadOnlyRootFilesystem))
	}
	if caps := sc.Capabilities; caps == nil || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(caps.Add, []corev1.Capability{"SETUID", "SETGID"}) {
		t.Errorf("capabilities = %+v, want drop [ALL], add [SETUID SETGID]", caps)
	}
	// The pod cannot mount; workspaces are in memory only through a
	// memory-backed volume at state_dir/mem.
	if v := g.volumes[g.mounts[path.Join(g.cfg.StateDir, "mem")]]; v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("no memory-backed emptyDir at %s/mem: workspaces stay on disk", g.cfg.StateDir)
	}
	// Nothing of the build namespace, and no token.
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken = %s, want false: this gateway has no business with the API server", deref(pod.AutomountServiceAccountToken))
	}
	if len(m.quotas) != 0 {
		t.Errorf("ResourceQuotas %v, want none: there is no build namespace", keys(m.quotas))
	}
	if len(m.roles)+len(m.roleBindings)+len(m.clusterRoles)+len(m.clusterRoleBindings) != 0 {
		t.Errorf("RBAC objects %v %v %v %v, want none", keys(m.roles), keys(m.roleBindings), keys(m.clusterRoles), keys(m.clusterRoleBindings))
	}
	if _, ok := m.namespaces[kubernetes.DefaultNamespace]; ok {
		t.Errorf("namespace %s, want none for build Pods", kubernetes.DefaultNamespace)
	}
	for k := range m.networkPolicies {
		if !strings.HasPrefix(k, m.deployment.Namespace+"/") {
			t.Errorf("NetworkPolicy %s outside the gateway's namespace", k)
		}
	}
	if p := containerPort(c, "data"); p != 0 {
		t.Errorf("container port data %d: no data server here", p)
	}
}

// checkQuota checks that the build namespace bounds its Pods, and that
// the bound lets every gateway run its concurrency, during a rolling
// update too.
func checkQuota(t *testing.T, m manifests, g gatewayConfig) {
	t.Helper()
	ns := runnerNamespace(g.cfg)
	d := m.deployment
	gateways := int64(1)
	if d.Spec.Replicas != nil {
		gateways = int64(*d.Spec.Replicas)
	}
	if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && ru != nil && ru.MaxSurge != nil {
		gateways += int64(ru.MaxSurge.IntValue())
	}
	need := gateways * int64(g.cfg.Concurrency)
	var bound int64 = -1
	for _, q := range m.quotas {
		if q.Namespace != ns || q.Spec.Scopes != nil || q.Spec.ScopeSelector != nil {
			continue
		}
		if p, ok := q.Spec.Hard[corev1.ResourcePods]; ok && (bound < 0 || p.Value() < bound) {
			bound = p.Value()
		}
	}
	switch {
	case bound < 0:
		t.Errorf("no ResourceQuota bounds the Pods in %s: the gateway's grant to create Pods is unbounded", ns)
	case g.cfg.Concurrency <= 0:
		t.Errorf("concurrency %d: want it set, to size the build namespace's Pod quota (%d) by", g.cfg.Concurrency, bound)
	case bound < need:
		t.Errorf("Pod quota in %s = %d, want at least %d (%d gateways, surge included, of concurrency %d)", ns, bound, need, gateways, g.cfg.Concurrency)
	}
}

// checkRBAC checks that the gateway's ServiceAccount gets exactly what the
// runner calls, in the build namespace only.
func checkRBAC(t *testing.T, m manifests, g gatewayConfig) {
	t.Helper()
	if len(m.clusterRoles) != 0 || len(m.clusterRoleBindings) != 0 {
		t.Errorf("cluster-wide grants %v %v, want none", keys(m.clusterRoles), keys(m.clusterRoleBindings))
	}
	ns := runnerNamespace(g.cfg)
	d := m.deployment
	if len(m.roles) != 1 {
		t.Fatalf("roles %v, want one", keys(m.roles))
	}
	for k, r := range m.roles {
		if r.Namespace != ns {
			t.Errorf("role %s: want it in the build namespace %s", k, ns)
		}
		if !reflect.DeepEqual(r.Rules, runnerRules) {
			t.Errorf("role %s rules = %+v, want exactly %+v", k, r.Rules, runnerRules)
		}
	}
	if len(m.roleBindings) != 1 {
		t.Fatalf("role bindings %v, want one", keys(m.roleBindings))
	}
	for k, b := range m.roleBindings {
		want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: d.Namespace}}
		if b.Namespace != ns || b.RoleRef.Kind != "Role" || m.roles[key(ns, b.RoleRef.Name)] == nil || !reflect.DeepEqual(b.Subjects, want) {
			t.Errorf("role binding %s = %s %+v %+v, want in %s, of the Role, to %+v only", k, b.Namespace, b.RoleRef, b.Subjects, ns, want)
		}
	}
}

// checkNetworkPolicies evaluates the policies (those the runner makes per
// build aside) for the connections that matter.
func checkNetworkPolicies(t *testing.T, m manifests, g gatewayConfig) {
	t.Helper()
	d := m.deployment
	_, p, _ := net.SplitHostPort(g.cfg.Runners.Kubernetes.DataListen)
	dataPort, _ := strconv.Atoi(p)
	_, p, _ = net.SplitHostPort(g.cfg.Listen)
	apiPort, _ := strconv.Atoi(p)
	ns := runnerNamespace(g.cfg)
	gw := endpoint{d.Namespace, d.Spec.Template.Labels}
	build := endpoint{ns, map[string]string{kubernetes.LabelManagedBy: kubernetes.ManagedBy, kubernetes.LabelInstance: g.cfg.Runners.Kubernetes.Instance, kubernetes.LabelBuild: "buildgw-b1"}}
	ci := endpoint{"ci", map[string]string{"app": "gitlab-runner"}}
	for _, c := range []struct {
		name     string
		from, to endpoint
		port     int
		want     bool
	}{
		{"build Pod to the data server", build, gw, dataPort, true},
		{"build Pod to the API", build, gw, apiPort, false},
		{"build Pod to cluster DNS", build, endpoint{"kube-system", map[string]string{"k8s-app": "kube-dns"}}, 53, false},
		{"build Pod to another build Pod", build, endpoint{ns, map[string]string{kubernetes.LabelManagedBy: kubernetes.ManagedBy}}, 8080, false},
		{"other Pod in the build namespace to the data server", endpoint{ns, map[string]string{"app": "x"}}, gw, dataPort, false},
		{"other Pod in the build namespace to anywhere", endpoint{ns, map[string]string{"app": "x"}}, ci, 443, false},
		{"CI job to the API", ci, gw, apiPort, true},
		{"CI job to the data server", ci, gw, dataPort, false},
		{"CI job to a build Pod", ci, build, 8080, false},
		{"gateway namespace Pod to the data server", endpoint{d.Namespace, map[string]string{"app": "x"}}, gw, dataPort, false},
	} {
		if got := allowed(m, c.from, c.to, c.port); got != c.want {
			t.Errorf("%s (%v -> %v:%d): allowed = %v, want %v", c.name, c.from, c.to, c.port, got, c.want)
		}
	}
}

// checkReplicas checks one gateway on its own state directory, or
// replicas on a shared store that a disruption budget keeps serving.
func checkReplicas(t *testing.T, m manifests, g gatewayConfig, replicated bool) {
	t.Helper()
	d := m.deployment
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	state := g.volumes[g.mounts[g.cfg.StateDir]]
	if !replicated {
		switch {
		case state.PersistentVolumeClaim == nil:
			t.Errorf("state_dir %s is volume %s, not a persistentVolumeClaim: anything else loses every build with the pod", g.cfg.StateDir, state.Name)
		case m.claims[key(d.Namespace, state.PersistentVolumeClaim.ClaimName)] == nil:
			t.Errorf("state volume claims %s, which the overlay does not define", state.PersistentVolumeClaim.ClaimName)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("deployment strategy %q, replicas %s, want Recreate and 1: a second pod cannot use the state directory", d.Spec.Strategy.Type, deref(d.Spec.Replicas))
		}
		if g.dsnFile != "" {
			t.Errorf("store.postgres_dsn_file = %q, want the embedded store", g.dsnFile)
		}
		if len(m.pdbs) != 0 {
			t.Errorf("disruption budgets %v: one replica with minAvailable 1 would block every node drain", keys(m.pdbs))
		}
		return
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas = %s, want 2 or more", deref(d.Spec.Replicas))
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy = %+v, want RollingUpdate with maxUnavailable 0", s)
	}
	if g.dsnFile != "/etc/buildgw/postgres/dsn" {
		t.Errorf("store.postgres_dsn_file = %q, want /etc/buildgw/postgres/dsn", g.dsnFile)
	}
	if v := g.volumes[g.mounts[path.Dir(g.dsnFile)]]; v.Secret == nil {
		t.Errorf("the DSN %s is in volume %+v, want a Secret (it holds the database password)", g.dsnFile, v)
	}
	if state.PersistentVolumeClaim != nil || len(m.claims) != 0 {
		t.Errorf("state volume %+v, claims %v: replicas share no volume, each has scratch space of its own", state, keys(m.claims))
	}
	// Replicas reap only their own build Pods at start-up.
	if got := flagValue(c.Args, "--kubernetes-instance"); got != "$(POD_NAME)" || !hasFieldEnv(c, "POD_NAME", "metadata.name") {
		t.Errorf("--kubernetes-instance = %q, env %+v: want $(POD_NAME) from metadata.name, or each replica deletes the others' build Pods when it starts", got, c.Env)
	}
	if len(m.pdbs) != 1 {
		t.Fatalf("disruption budgets %v, want one", keys(m.pdbs))
	}
	for k, b := range m.pdbs {
		if b.Namespace != d.Namespace || !selects(b.Spec.Selector, d.Spec.Template.Labels) || b.Spec.MinAvailable == nil || b.Spec.MinAvailable.IntValue() != 1 || b.Spec.MaxUnavailable != nil {
			t.Errorf("disruption budget %s = %+v, want minAvailable 1 over the gateway's pods %v", k, b.Spec, d.Spec.Template.Labels)
		}
	}
}

// checkServiceMonitor checks the optional component: without it nothing
// needs the Prometheus Operator's CRD; with it, Prometheus scrapes the API
// port with a token the gateway knows.
func checkServiceMonitor(t *testing.T, m manifests, g gatewayConfig, monitored bool) {
	t.Helper()
	if !monitored {
		if len(m.serviceMonitors) != 0 {
			t.Errorf("ServiceMonitors %v without the component: the CRD is not always installed", keys(m.serviceMonitors))
		}
		return
	}
	if len(m.serviceMonitors) != 1 {
		t.Fatalf("ServiceMonitors %v, want one", keys(m.serviceMonitors))
	}
	metrics := false
	for _, tok := range g.cfg.Tokens {
		metrics = metrics || tok.Name == "metrics"
	}
	for k, sm := range m.serviceMonitors {
		s := m.service
		if sm.Metadata.Namespace != s.Namespace || !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{s.Namespace}) ||
			!selects(&metav1.LabelSelector{MatchLabels: sm.Spec.Selector.MatchLabels}, s.Labels) {
			t.Errorf("ServiceMonitor %s selects %v in %v, want the Service %s/%s (labels %v)", k, sm.Spec.Selector.MatchLabels, sm.Spec.NamespaceSelector.MatchNames, s.Namespace, s.Name, s.Labels)
		}
		if len(sm.Spec.Endpoints) != 1 {
			t.Fatalf("ServiceMonitor %s endpoints = %d, want 1", k, len(sm.Spec.Endpoints))
		}
		e := sm.Spec.Endpoints[0]
		if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) || e.Scheme != "https" || e.Path != "/metrics" {
			t.Errorf("ServiceMonitor %s endpoint %s %s %s, want https /metrics on a port of the Service", k, e.Scheme, e.Port, e.Path)
		}
		cred := m.secrets[key(sm.Metadata.Namespace, e.Authorization.Credentials.Name)]
		if e.Authorization.Type != "Bearer" || cred == nil || cred.StringData[e.Authorization.Credentials.Key] == "" && len(cred.Data[e.Authorization.Credentials.Key]) == 0 {
			t.Errorf("ServiceMonitor %s authorization %+v, want a Bearer token from a Secret beside it (/metrics is authenticated)", k, e.Authorization)
		}
		if !metrics {
			t.Errorf("the configuration has no token named metrics for Prometheus's")
		}
		if ca := m.secrets[key(sm.Metadata.Namespace, e.TLSConfig.CA.Secret.Name)]; ca == nil {
			t.Errorf("ServiceMonitor %s verifies TLS with Secret %q, which is not there", k, e.TLSConfig.CA.Secret.Name)
		}
	}
}

// endpoint is a Pod: its namespace and labels.
type endpoint struct {
	ns     string
	labels map[string]string
}

// allowed reports whether m's NetworkPolicies let from open a TCP
// connection to to:port: from's egress and to's ingress, each open unless
// a policy selects the Pod for that direction, then only as a rule says.
// ipBlock peers match no Pod here.
func allowed(m manifests, from, to endpoint, port int) bool {
	return direction(m, from, to, port, networkingv1.PolicyTypeEgress) && direction(m, to, from, port, networkingv1.PolicyTypeIngress)
}

func direction(m manifests, self, peer endpoint, port int, dir networkingv1.PolicyType) bool {
	isolated := false
	for _, np := range m.networkPolicies {
		if np.Namespace != self.ns || !selects(&np.Spec.PodSelector, self.labels) || !slices.Contains(np.Spec.PolicyTypes, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeEgress {
			for _, r := range np.Spec.Egress {
				if peersMatch(m, np.Namespace, r.To, peer) && portsMatch(r.Ports, port) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Ingress {
				if peersMatch(m, np.Namespace, r.From, peer) && portsMatch(r.Ports, port) {
					return true
				}
			}
		}
	}
	return !isolated
}

func peersMatch(m manifests, policyNS string, peers []networkingv1.NetworkPolicyPeer, e endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	nsLabels := map[string]string{}
	if n := m.namespaces[e.ns]; n != nil {
		for k, v := range n.Labels {
			nsLabels[k] = v
		}
	}
	nsLabels["kubernetes.io/metadata.name"] = e.ns
	for _, p := range peers {
		if p.IPBlock != nil {
			continue
		}
		nsOK := e.ns == policyNS
		if p.NamespaceSelector != nil {
			nsOK = selects(p.NamespaceSelector, nsLabels)
		}
		podOK := p.PodSelector == nil || selects(p.PodSelector, e.labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, port int) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) && (p.Port == nil || p.Port.IntValue() == port) {
			return true
		}
	}
	return false
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(l))
}

func runnerNamespace(cfg gateway.Config) string {
	if ns := cfg.Runners.Kubernetes.Namespace; ns != "" {
		return ns
	}
	return kubernetes.DefaultNamespace
}

// flagValue is the value of --name=value or --name value in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func hasFieldEnv(c corev1.Container, name, field string) bool {
	return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field
	})
}

func containerPort(c corev1.Container, name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	return 0
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// deref formats what p points to, or nil.
func deref[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

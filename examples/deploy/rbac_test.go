package deploy_test

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/internal/testcluster"
	"github.com/buildgw/buildgw/internal/testenv"
	k8srunner "github.com/buildgw/buildgw/runners/kubernetes"
)

// TestRBAC applies the base's namespaces, ServiceAccounts, Role,
// RoleBinding, NetworkPolicies and Pod quota to a real API server (in namespaces of
// the test's own), then acts as the gateway's ServiceAccount, with a
// token the API server issued for it: it may run builds' Pods and
// NetworkPolicies in the build namespace, and nothing else. Then the
// kubernetes runner itself runs a build with those credentials: the Role
// is enough, not only narrow.
func TestRBAC(t *testing.T) {
	c := testcluster.Start(t)
	adminCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeManifests(t, "base", render(t, "base"))
	g := checkGateway(t, m)
	d := m.deployment
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	gwNS, runNS := "rbac-gw-"+suffix, "rbac-builds-"+suffix
	rename := map[string]string{d.Namespace: gwNS, runnerNamespace(g.cfg): runNS}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(5*time.Minute))
	defer cancel()
	applyRBAC(ctx, t, admin, m, rename)

	saName := d.Spec.Template.Spec.ServiceAccountName
	tok, err := admin.CoreV1().ServiceAccounts(gwNS).CreateToken(ctx, saName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", gwNS, saName, err)
	}
	saCfg := &rest.Config{Host: adminCfg.Host, BearerToken: tok.Status.Token, QPS: 50, Burst: 100, TLSClientConfig: rest.TLSClientConfig{
		CAFile: adminCfg.CAFile, CAData: adminCfg.CAData, ServerName: adminCfg.ServerName,
	}}
	sa, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	user := "system:serviceaccount:" + gwNS + ":" + saName
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || review.Status.UserInfo.Username != user {
		t.Fatalf("the token's user = %+v, %v; want %s", review, err, user)
	}

	// The gateway's own Pod passes its namespace's restricted Pod
	// Security, in every overlay that builds as Pods (a dry run: the
	// namespace is the gateway's, relocated).
	t.Run("gateway Pod", func(t *testing.T) {
		for _, o := range overlays {
			if o.inPod {
				continue
			}
			om := decodeManifests(t, o.dir, render(t, o.dir))
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gateway-probe"}, Spec: *om.deployment.Spec.Template.Spec.DeepCopy()}
			if _, err := admin.CoreV1().Pods(gwNS).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("%s: the gateway's Pod in its namespace: %v", o.dir, err)
			}
		}
	})
	t.Run("allowed", func(t *testing.T) { checkAllowed(ctx, t, sa, runNS) })
	t.Run("refused", func(t *testing.T) { checkRefused(ctx, t, sa, runNS, gwNS) })
	t.Run("rules", func(t *testing.T) { checkRules(ctx, t, sa, runNS) })
	t.Run("runner", func(t *testing.T) { runnerBuild(ctx, t, c, admin, saCfg, runNS) })
}

// applyRBAC creates m's Namespaces, ServiceAccounts, Roles, RoleBindings
// and NetworkPolicies with their namespaces renamed, and deletes the
// namespaces when the test ends.
func applyRBAC(ctx context.Context, t *testing.T, admin kubernetes.Interface, m manifests, rename map[string]string) {
	t.Helper()
	ren := func(ns string) string {
		if n, ok := rename[ns]; ok {
			return n
		}
		t.Fatalf("object in namespace %q, which is neither the gateway's nor the builds'", ns)
		return ""
	}
	for _, o := range m.order {
		var err error
		switch o := o.(type) {
		case *corev1.Namespace:
			n := o.DeepCopy()
			n.Name = ren(n.Name)
			_, err = admin.CoreV1().Namespaces().Create(ctx, n, metav1.CreateOptions{})
			if err == nil {
				t.Cleanup(func() { admin.CoreV1().Namespaces().Delete(context.Background(), n.Name, metav1.DeleteOptions{}) })
			}
		case *corev1.ServiceAccount:
			s := o.DeepCopy()
			s.Namespace = ren(s.Namespace)
			_, err = admin.CoreV1().ServiceAccounts(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// The controller manager made the namespace's default
				// account first.
				var cur *corev1.ServiceAccount
				if cur, err = admin.CoreV1().ServiceAccounts(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{}); err == nil {
					cur.AutomountServiceAccountToken = s.AutomountServiceAccountToken
					_, err = admin.CoreV1().ServiceAccounts(s.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
				}
			}
		case *corev1.ResourceQuota:
			q := o.DeepCopy()
			q.Namespace = ren(q.Namespace)
			_, err = admin.CoreV1().ResourceQuotas(q.Namespace).Create(ctx, q, metav1.CreateOptions{})
		case *rbacv1.Role:
			r := o.DeepCopy()
			r.Namespace = ren(r.Namespace)
			_, err = admin.RbacV1().Roles(r.Namespace).Create(ctx, r, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			b := o.DeepCopy()
			b.Namespace = ren(b.Namespace)
			for i := range b.Subjects {
				b.Subjects[i].Namespace = ren(b.Subjects[i].Namespace)
			}
			_, err = admin.RbacV1().RoleBindings(b.Namespace).Create(ctx, b, metav1.CreateOptions{})
		case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			t.Fatalf("%T in the manifests: the gateway gets nothing cluster-wide", o)
		case *networkingv1.NetworkPolicy:
			np := o.DeepCopy()
			np.Namespace = ren(np.Namespace)
			for _, peers := range peerLists(np) {
				for i := range peers {
					if s := peers[i].NamespaceSelector; s != nil {
						if n, ok := s.MatchLabels["kubernetes.io/metadata.name"]; ok {
							s.MatchLabels["kubernetes.io/metadata.name"] = ren(n)
						}
					}
				}
			}
			_, err = admin.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			t.Fatalf("applying %T: %v", o, err)
		}
	}
}

func peerLists(np *networkingv1.NetworkPolicy) [][]networkingv1.NetworkPolicyPeer {
	var l [][]networkingv1.NetworkPolicyPeer
	for _, r := range np.Spec.Ingress {
		l = append(l, r.From)
	}
	for _, r := range np.Spec.Egress {
		l = append(l, r.To)
	}
	return l
}

// checkAllowed does what the runner does, as the gateway: a Pod (one the
// namespace's restricted Pod Security admits) and a NetworkPolicy are
// created, read, watched or updated, and deleted.
func checkAllowed(ctx context.Context, t *testing.T, sa kubernetes.Interface, ns string) {
	pods := sa.CoreV1().Pods(ns)
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "rbac-probe").String()})
	if err != nil {
		t.Fatalf("watching Pods in %s: %v", ns, err)
	}
	defer w.Stop()
	if _, err := pods.Create(ctx, restrictedPod("rbac-probe"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a Pod in %s: %v", ns, err)
	}
	select {
	case ev := <-w.ResultChan():
		if ev.Type != watch.Added {
			t.Errorf("first watch event = %s, want ADDED", ev.Type)
		}
	case <-ctx.Done():
		t.Fatal("no watch event for the created Pod")
	}
	if _, err := pods.Get(ctx, "rbac-probe", metav1.GetOptions{}); err != nil {
		t.Errorf("getting the Pod: %v", err)
	}
	if _, err := pods.List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing Pods: %v", err)
	}
	// Authorized, whether or not a kubelet has the Pod yet.
	if _, err := pods.GetLogs("rbac-probe", &corev1.PodLogOptions{}).DoRaw(ctx); apierrors.IsForbidden(err) {
		t.Errorf("reading the Pod's log: %v", err)
	}
	if err := pods.Delete(ctx, "rbac-probe", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Errorf("deleting the Pod: %v", err)
	}

	nps := sa.NetworkingV1().NetworkPolicies(ns)
	np, err := nps.Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"buildgw.io/build": "rbac-probe"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a NetworkPolicy in %s: %v", ns, err)
	}
	if np, err = nps.Get(ctx, np.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("getting the NetworkPolicy: %v", err)
	} else {
		np.Labels = map[string]string{"updated": "yes"}
		if _, err := nps.Update(ctx, np, metav1.UpdateOptions{}); err != nil {
			t.Errorf("updating the NetworkPolicy: %v", err)
		}
	}
	if _, err := nps.List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing NetworkPolicies: %v", err)
	}
	if err := nps.Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Errorf("deleting the NetworkPolicy: %v", err)
	}
}

// checkRefused: no Secrets, no other namespace, nothing cluster-wide, no
// way into a Pod, and no Pod that the restricted Pod Security Standard
// refuses.
func checkRefused(ctx context.Context, t *testing.T, sa kubernetes.Interface, runNS, gwNS string) {
	for _, c := range []struct {
		what string
		call func() error
	}{
		{"get a Secret in the build namespace", func() error {
			_, err := sa.CoreV1().Secrets(runNS).Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"list Secrets in the build namespace", func() error {
			_, err := sa.CoreV1().Secrets(runNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create a Secret in the build namespace", func() error {
			_, err := sa.CoreV1().Secrets(runNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		}},
		{"list ServiceAccounts in the build namespace", func() error {
			_, err := sa.CoreV1().ServiceAccounts(runNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"request a token in the build namespace", func() error {
			_, err := sa.CoreV1().ServiceAccounts(runNS).CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}},
		{"patch a Pod in the build namespace", func() error {
			_, err := sa.CoreV1().Pods(runNS).Patch(ctx, "any", "application/merge-patch+json", []byte(`{}`), metav1.PatchOptions{})
			return err
		}},
		{"read the build namespace's Roles", func() error {
			_, err := sa.RbacV1().Roles(runNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create a RoleBinding in the build namespace", func() error {
			_, err := sa.RbacV1().RoleBindings(runNS).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "buildgw", Namespace: gwNS}},
			}, metav1.CreateOptions{})
			return err
		}},
		{"create a Pod in the gateway namespace", func() error {
			_, err := sa.CoreV1().Pods(gwNS).Create(ctx, restrictedPod("x"), metav1.CreateOptions{})
			return err
		}},
		{"create a Pod in default", func() error {
			_, err := sa.CoreV1().Pods("default").Create(ctx, restrictedPod("x"), metav1.CreateOptions{})
			return err
		}},
		{"list Pods in the gateway namespace", func() error {
			_, err := sa.CoreV1().Pods(gwNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get a Secret in the gateway namespace", func() error {
			_, err := sa.CoreV1().Secrets(gwNS).Get(ctx, "buildgw-tls", metav1.GetOptions{})
			return err
		}},
		{"list ConfigMaps in the gateway namespace", func() error {
			_, err := sa.CoreV1().ConfigMaps(gwNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Secrets in kube-system", func() error {
			_, err := sa.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Pods in all namespaces", func() error {
			_, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Namespaces", func() error {
			_, err := sa.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get the build Namespace", func() error {
			_, err := sa.CoreV1().Namespaces().Get(ctx, runNS, metav1.GetOptions{})
			return err
		}},
		{"list Nodes", func() error {
			_, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list ClusterRoles", func() error {
			_, err := sa.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
			return err
		}},
	} {
		if err := c.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: err = %v, want forbidden", c.what, err)
		}
	}

	// Creating Pods is the grant to guard: Pod Security keeps it from
	// becoming a node.
	for name, mutate := range map[string]func(*corev1.Pod){
		"privilege-escalation": func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true) },
		"hostPath": func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		},
		"hostNetwork": func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"root": func(p *corev1.Pod) {
			p.Spec.SecurityContext.RunAsNonRoot = nil
			p.Spec.SecurityContext.RunAsUser = ptr(int64(0))
		},
		"sys-admin": func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
		},
	} {
		p := restrictedPod("psa-" + strings.ToLower(name))
		mutate(p)
		_, err := sa.CoreV1().Pods(runNS).Create(ctx, p, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
			t.Errorf("creating a %s Pod in the build namespace: err = %v, want forbidden by PodSecurity", name, err)
		}
	}
}

// checkRules compares everything the account may do in the build
// namespace, as the API server lists it, with the Role: nothing more
// comes from elsewhere (a binding to the account's groups, say).
func checkRules(ctx context.Context, t *testing.T, sa kubernetes.Interface, ns string) {
	rr, err := sa.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("reviewing the account's rules: %v", err)
	}
	if rr.Status.Incomplete {
		t.Fatalf("rules review incomplete: %s", rr.Status.EvaluationError)
	}
	// What every authenticated identity may do: review itself
	// (system:basic-user) and read the cluster's trust bundles, which are
	// public (system:cluster-trust-bundle-reader, from Kubernetes 1.33).
	everyone := map[string][]string{
		"authorization.k8s.io/selfsubjectaccessreviews": {"create"},
		"authorization.k8s.io/selfsubjectrulesreviews":  {"create"},
		"authentication.k8s.io/selfsubjectreviews":      {"create"},
		"certificates.k8s.io/clustertrustbundles":       {"get", "list", "watch"},
	}
	want := map[string][]string{}
	for _, r := range runnerRules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				want[g+"/"+res] = r.Verbs
			}
		}
	}
	got := map[string][]string{}
	for _, r := range rr.Status.ResourceRules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				if v, ok := everyone[k]; ok && slices.Equal(r.Verbs, v) && len(r.ResourceNames) == 0 {
					continue
				}
				if len(r.ResourceNames) != 0 {
					k += fmt.Sprint(r.ResourceNames)
				}
				got[k] = append(got[k], r.Verbs...)
			}
		}
	}
	for k := range got {
		slices.Sort(got[k])
		got[k] = slices.Compact(got[k])
	}
	for k, v := range want {
		w := slices.Clone(v)
		slices.Sort(w)
		if !slices.Equal(got[k], w) {
			t.Errorf("%s: may %v in %s, want %v", k, got[k], ns, w)
		}
		delete(got, k)
	}
	for k, v := range got {
		t.Errorf("%s: may %v in %s, want nothing", k, v, ns)
	}
}

// runnerBuild runs a build through the kubernetes runner with the
// account's credentials. Without a node (a control plane alone, while
// developing) the Pod is never scheduled: then the build is cancelled
// once its Pod exists, which still shows that the runner creates, updates,
// watches and deletes what it needs; the whole build, log included, needs
// scripts/cluster's node.
func runnerBuild(ctx context.Context, t *testing.T, c *testcluster.Cluster, admin kubernetes.Interface, saCfg *rest.Config, ns string) {
	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	req := &builder.Request{
		ID:         "rbac-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Workspace:  ws,
		ContextDir: filepath.Join(ws, "context"),
		OutputDir:  filepath.Join(ws, "out"),
		Dockerfile: "Dockerfile",
	}
	for _, d := range []string{req.ContextDir, req.OutputDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"Dockerfile": "FROM scratch\nCOPY hello /hello\n", "hello": "built with the gateway's Role\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(req.ContextDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := []k8srunner.Option{
		k8srunner.WithRESTConfig(saCfg),
		k8srunner.WithNamespace(ns),
		k8srunner.WithTimeout(testenv.Scale(5 * time.Minute)),
		k8srunner.WithResources(corev1.ResourceRequirements{}),
		k8srunner.WithInstance("rbac-test"),
	}
	if len(nodes.Items) == 0 {
		r, err := k8srunner.New(append(opts, k8srunner.WithDataServer("127.0.0.1:0", ""))...)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.Available(ctx); err != nil {
			t.Errorf("Available as the gateway's account: %v", err)
		}
		bctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := admin.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", k8srunner.PodName(req.ID)).String()})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		done := make(chan error, 1)
		var log strings.Builder
		go func() { _, err := r.Build(bctx, req, &log); done <- err }()
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Added {
				t.Errorf("watch event %s, want the build's Pod ADDED", ev.Type)
			}
		case err := <-done:
			t.Fatalf("Build as the gateway's account = %v before its Pod existed; log:\n%s", err, log.String())
		}
		cancel()
		if err := <-done; err == nil {
			t.Error("Build of an unscheduled Pod = nil after cancel, want an error")
		}
		if strings.Contains(log.String(), "forbidden") {
			t.Errorf("build log reports a forbidden call:\n%s", log.String())
		}
		t.Log("no node: the build Pod was created and removed with the gateway's credentials; the whole build runs on scripts/cluster's node")
	} else {
		exe := testenv.Executor(t)
		img, err := k8srunner.ExecutorImage(exe, "/etc/ssl/certs/ca-certificates.crt")
		if err != nil {
			t.Fatal(err)
		}
		dg, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ref := "buildgw.local/kaniko-executor:" + dg.Hex[:16]
		tarPath := filepath.Join(t.TempDir(), "executor.tar")
		if err := k8srunner.WriteExecutorImage(tarPath, ref, img); err != nil {
			t.Fatal(err)
		}
		c.ImportImage(t, tarPath)
		profile, err := k8srunner.SeccompProfile()
		if err != nil {
			t.Fatal(err)
		}
		c.InstallSeccompProfile(t, k8srunner.SeccompProfileName, profile)
		r, err := k8srunner.New(append(opts, k8srunner.WithImage(ref, corev1.PullNever),
			k8srunner.WithDataServer(net.JoinHostPort(c.HostLink(t), "0"), ""))...)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var log strings.Builder
		built, err := r.Build(ctx, req, &log)
		if err != nil {
			t.Fatalf("Build as the gateway's account: %v; log:\n%s", err, log.String())
		}
		if got := fileInImage(t, built, "hello"); got != files["hello"] {
			t.Errorf("/hello in the built image = %q, want %q", got, files["hello"])
		}
		// The log came through pods/log.
		if strings.TrimSpace(log.String()) == "" {
			t.Error("build log is empty, want the Pod's log")
		}
	}
	// Nothing left: the runner deleted its Pod and NetworkPolicy.
	pods, err := admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		t.Errorf("Pod %s left after the build", p.Name)
	}
	nps, err := admin.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{LabelSelector: k8srunner.LabelManagedBy + "=" + k8srunner.ManagedBy})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nps.Items {
		t.Errorf("NetworkPolicy %s left after the build", n.Name)
	}
}

// restrictedPod is a Pod that the restricted Pod Security Standard
// admits.
func restrictedPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				RunAsUser:      ptr(int64(10001)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "c",
				Image:           testcluster.Image,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"true"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// fileInImage returns the content of the file name (relative to /) in
// img's filesystem.
func fileInImage(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the image: %v", name, err)
		}
		if strings.TrimPrefix(h.Name, "/") == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

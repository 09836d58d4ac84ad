// Package kubernetes runs builds as Pods of a Kubernetes cluster: each
// build is one Pod, in the operator's namespace, running the executor
// image this repository builds (ExecutorImage) as a user of no privilege,
// with the same rootless sandbox the kaniko runner gives a build on the
// gateway's host (runners/kubernetes/podinit).
//
// The Pod holds no credential: no ServiceAccount token, no registry
// secret. It fetches the build context and base images from the
// gateway's data server over one-time URLs, and sends back the OCI
// layout kaniko wrote, which the gateway reads as hostile and pushes
// itself. A NetworkPolicy per build refuses everything but the data
// server, unless the build has egress, which still never reaches
// cluster-internal or metadata addresses. The build log is the Pod's,
// followed through the API server. Whatever the outcome, the Pod and its
// NetworkPolicy are deleted, and Build returns once the Pod is gone;
// Reap deletes what a gateway killed mid-build left.
package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/netmode"
	"github.com/buildgw/buildgw/ocilayout"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/runners/kubernetes/podinit"
)

var (
	_ builder.Runner  = (*Runner)(nil)
	_ builder.Checker = (*Runner)(nil)
	_ builder.Reaper  = (*Runner)(nil)
	_ builder.Cleaner = (*Runner)(nil)
)

// Labels and annotations of what the runner creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "buildgw"
	LabelInstance  = "buildgw.io/instance"
	LabelBuild     = "buildgw.io/build"
	AnnotationID   = "buildgw.io/build-id"
	// Container is the name of the Pod's one container.
	Container = "build"
)

// Runner runs each build as a Pod.
type Runner struct {
	o      options
	client kubernetes.Interface
	data   *dataServer
}

// New returns a Runner and starts its data server; Close stops it.
func New(opts ...Option) (*Runner, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	cfg := o.rest
	if cfg == nil {
		if o.kubeconfig != "" {
			cfg, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		} else {
			cfg, err = rest.InClusterConfig()
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes runner: client configuration: %w", err)
		}
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: %w", err)
	}
	d, err := newDataServer(o.listen, o.dataURL, defaultDataLimits())
	if err != nil {
		return nil, err
	}
	return &Runner{o: o, client: client, data: d}, nil
}

// Close stops the data server.
func (r *Runner) Close() error { return r.data.close() }

// DataURL is the URL by which Pods reach the data server.
func (r *Runner) DataURL() string { return r.data.url }

// Available reports whether the runner may list Pods in its namespace.
func (r *Runner) Available(ctx context.Context) error {
	if _, err := r.client.CoreV1().Pods(r.o.namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("kubernetes runner: listing Pods in %s: %w", r.o.namespace, err)
	}
	return nil
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// PodName returns the name of the Pod of the build id: "buildgw-" and the
// id made a DNS label, with a hash of the id when that changed it or cut
// it short, so that two builds never share one.
func PodName(id string) string {
	n := strings.Trim(notDNS.ReplaceAllString(strings.ToLower(id), "-"), "-")
	if n == id && len(n) <= 55 {
		return "buildgw-" + n
	}
	sum := sha256.Sum256([]byte(id))
	if len(n) > 38 {
		n = strings.TrimRight(n[:38], "-")
	}
	return "buildgw-" + n + "-" + hex.EncodeToString(sum[:])[:16]
}

// Build runs req in a Pod.
func (r *Runner) Build(ctx context.Context, req *builder.Request, log io.Writer) (v1.Image, error) {
	network := req.Network
	if network == "" {
		network = r.o.network
	}
	if err := network.Check(); err != nil {
		return nil, fmt.Errorf("kubernetes runner: %w", err)
	}
	name := PodName(req.ID)
	t := &transfer{ctxDir: req.ContextDir, out: req.OutputDir, deadline: time.Now().Add(r.o.timeout), max: r.o.maxOutput}
	if req.BaseImages != nil {
		t.base = req.BaseImages.Layout
	}
	url, token, err := r.data.register(name, t)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: %w", err)
	}
	defer r.data.unregister(name)

	lw := builder.NewLineWriter(log)
	defer lw.Flush()
	// Whatever happens from here, the Pod and its policy go, and Build
	// returns only once the Pod's processes are gone.
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.o.deleteWait)
		defer cancel()
		if err := r.remove(ctx, name); err != nil {
			fmt.Fprintf(lw, "buildgw: removing Pod %s: %v\n", name, err)
		}
	}()
	np := r.networkPolicy(name, network)
	if _, err := r.client.NetworkingV1().NetworkPolicies(r.o.namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("kubernetes runner: creating the build's NetworkPolicy: %w", err)
	}
	pod, err := r.client.CoreV1().Pods(r.o.namespace).Create(ctx, r.pod(name, req, network, url, token), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: creating the build's Pod: %w", err)
	}
	// The policy goes with the Pod, even if no gateway is left to
	// delete it.
	np.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}}
	if _, err := r.client.NetworkingV1().NetworkPolicies(r.o.namespace).Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		fmt.Fprintf(lw, "buildgw: making Pod %s own its NetworkPolicy: %v\n", name, err)
	}

	pod, err = r.waitPod(ctx, pod, started)
	if err != nil {
		return nil, err
	}
	logsDone := make(chan error, 1)
	go func() { logsDone <- r.followLog(ctx, name, lw) }()
	pod, err = r.waitPod(ctx, pod, ended)
	if err != nil {
		return nil, err
	}
	// The log stream ends with the container; give it a moment to drain.
	select {
	case err := <-logsDone:
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(lw, "buildgw: reading the Pod's log: %v\n", err)
		}
	case <-time.After(30 * time.Second):
	}
	code, reason := exitCode(pod)
	switch {
	case code == 0:
	case code == podinit.ExitFetch:
		return nil, fmt.Errorf("the build's Pod could not fetch the build's data from the gateway; see the build log")
	case code == podinit.ExitUpload:
		return nil, fmt.Errorf("the build's Pod could not send the image to the gateway; see the build log")
	case reason == "DeadlineExceeded":
		return nil, fmt.Errorf("the build's Pod exceeded its deadline of %s", r.o.timeout)
	default:
		return nil, fmt.Errorf("the build failed (exit status %d, %s); see the build log", code, reason)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := t.waitOutput(wctx); err != nil {
		return nil, fmt.Errorf("receiving the image from the build's Pod: %w", err)
	}
	img, err := ocilayout.Image(ctx, req.OutputDir)
	if err != nil {
		return nil, fmt.Errorf("reading the image from the build's Pod: %w", err)
	}
	return img, nil
}

func (r *Runner) labels(name string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelInstance: r.o.instance, LabelBuild: name}
}

// pod is the build's Pod.
func (r *Runner) pod(name string, req *builder.Request, network netmode.Mode, url, token string) *corev1.Pod {
	no, yes := false, true
	user := r.o.user
	deadline := int64(r.o.timeout / time.Second)
	sc := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	if r.o.seccomp != string(corev1.SeccompProfileTypeRuntimeDefault) {
		p := r.o.seccomp
		sc = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &p}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   r.o.namespace,
			Labels:      r.labels(name),
			Annotations: map[string]string{AnnotationID: req.ID},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: ptr(int64(1)),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser:      &user,
				RunAsGroup:     &user,
				RunAsNonRoot:   &yes,
				SeccompProfile: sc,
			},
			Containers: []corev1.Container{{
				Name:            Container,
				Image:           r.o.image,
				ImagePullPolicy: r.o.pullPolicy,
				Command:         []string{podinit.Executor},
				Args:            kaniko.ExecutorArgs(req),
				Env: []corev1.EnvVar{
					{Name: podinit.EnvURL, Value: url},
					{Name: podinit.EnvToken, Value: token},
					{Name: podinit.EnvNetwork, Value: string(network)},
					{Name: podinit.EnvMaxOutput, Value: strconv.FormatInt(r.o.maxOutput, 10)},
					{Name: podinit.EnvCA, Value: string(r.data.caPEM)},
					{Name: podinit.EnvExtraCAs, Value: string(req.ExtraCAs)},
				},
				Resources: r.o.resources,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem:   &yes,
					Privileged:               &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts:             []corev1.VolumeMount{{Name: "work", MountPath: podinit.WorkDir}},
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			}},
			Volumes: []corev1.Volume{{
				Name:         "work",
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: r.o.resources.Limits.StorageEphemeral()}},
			}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// networkPolicy refuses the build's Pod every connection in, and every
// connection out but to the data server; with egress, also to anywhere
// but the refused networks.
func (r *Runner) networkPolicy(name string, network netmode.Mode) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	host, port := splitURL(r.data.url)
	portVal := intstr.FromInt32(int32(port))
	egress := []networkingv1.NetworkPolicyEgressRule{{
		To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: host + hostBits(host)}}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &portVal}},
	}}
	if network == netmode.Egress {
		var v4, v6 []string
		for _, p := range r.o.refuse {
			if p.Addr().Is4() {
				v4 = append(v4, p.String())
			} else {
				v6 = append(v6, p.String())
			}
		}
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: v4}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "::/0", Except: v6}},
		}})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.o.namespace, Labels: r.labels(name)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelBuild: name}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress:      egress,
		},
	}
}

// splitURL returns the host and port of the data server's URL.
func splitURL(u string) (string, int) {
	rest := u[strings.Index(u, "://")+3:]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	i := strings.LastIndexByte(rest, ':')
	port, _ := strconv.Atoi(rest[i+1:])
	return strings.Trim(rest[:i], "[]"), port
}

func hostBits(host string) string {
	if strings.Contains(host, ":") {
		return "/128"
	}
	return "/32"
}

// started: the container runs or ran. ended: it ran and stopped.
func started(p *corev1.Pod) (bool, error) {
	if done, err := ended(p); done || err != nil {
		return done, err
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running != nil || c.State.Terminated != nil {
			return true, nil
		}
		if w := c.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ImagePullBackOff", "ErrImagePull", "RunContainerError":
				return false, fmt.Errorf("the build's Pod cannot start: %s: %s", w.Reason, w.Message)
			}
		}
	}
	return false, nil
}

func ended(p *corev1.Pod) (bool, error) {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
}

// waitPod watches the Pod until cond holds.
func (r *Runner) waitPod(ctx context.Context, pod *corev1.Pod, cond func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	if ok, err := cond(pod); ok || err != nil {
		return pod, err
	}
	lw := r.listWatch(pod.Name)
	ev, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(e watch.Event) (bool, error) {
		switch e.Type {
		case watch.Deleted:
			return false, errors.New("the build's Pod was deleted")
		case watch.Added, watch.Modified:
			return cond(e.Object.(*corev1.Pod))
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, fmt.Errorf("watching the build's Pod: %w", err)
	}
	return ev.Object.(*corev1.Pod), nil
}

func (r *Runner) listWatch(name string) cache.ListerWatcher {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	pods := r.client.CoreV1().Pods(r.o.namespace)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return pods.Watch(ctx, o)
		},
	}
}

// followLog copies the container's log to w until it ends.
func (r *Runner) followLog(ctx context.Context, name string, w io.Writer) error {
	rc, err := r.client.CoreV1().Pods(r.o.namespace).GetLogs(name, &corev1.PodLogOptions{Container: Container, Follow: true}).Stream(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// exitCode returns the container's exit code and why it stopped.
func exitCode(p *corev1.Pod) (int, string) {
	for _, c := range p.Status.ContainerStatuses {
		if t := c.State.Terminated; t != nil {
			return int(t.ExitCode), t.Reason
		}
	}
	if p.Status.Reason != "" {
		return -1, p.Status.Reason
	}
	return -1, "no exit status"
}

// remove deletes the Pod and its NetworkPolicy and waits until the Pod is
// gone: its containers stopped and the kubelet said so.
func (r *Runner) remove(ctx context.Context, name string) error {
	pods := r.client.CoreV1().Pods(r.o.namespace)
	// A grace period, not 0: with 0 the API server forgets the Pod at
	// once, before the kubelet has stopped anything.
	err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := r.client.NetworkingV1().NetworkPolicies(r.o.namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	key := r.o.namespace + "/" + name
	_, err = watchtools.UntilWithSync(ctx, r.listWatch(name), &corev1.Pod{}, func(s cache.Store) (bool, error) {
		_, exists, err := s.GetByKey(key)
		return !exists, err
	}, func(e watch.Event) (bool, error) { return e.Type == watch.Deleted, nil })
	if err != nil {
		return fmt.Errorf("waiting for Pod %s to be gone: %w", name, err)
	}
	return nil
}

// Cleanup deletes the Pod of the build id, if a previous gateway left it.
func (r *Runner) Cleanup(ctx context.Context, id string) error {
	return r.remove(ctx, PodName(id))
}

// Reap deletes every Pod and NetworkPolicy of this gateway's instance
// (a gateway killed mid-build left them; its builds are failed by the
// Manager), and waits until the Pods are gone. dirs are not used: the
// runner keeps no state on the gateway's host.
func (r *Runner) Reap(ctx context.Context, _ []string) ([]string, error) {
	sel := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy + "," + LabelInstance + "=" + r.o.instance}
	pods, err := r.client.CoreV1().Pods(r.o.namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: listing orphaned Pods: %w", err)
	}
	nps, err := r.client.NetworkingV1().NetworkPolicies(r.o.namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: listing orphaned NetworkPolicies: %w", err)
	}
	var cleaned []string
	var errs []error
	for _, p := range pods.Items {
		if err := r.remove(ctx, p.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		cleaned = append(cleaned, "pod/"+p.Name)
	}
	for _, n := range nps.Items {
		err := r.client.NetworkingV1().NetworkPolicies(r.o.namespace).Delete(ctx, n.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		cleaned = append(cleaned, "networkpolicy/"+n.Name)
	}
	return cleaned, errors.Join(errs...)
}

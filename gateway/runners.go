package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/buildgw/buildgw/runners/dind"
	"github.com/buildgw/buildgw/runners/kaniko"
	"github.com/buildgw/buildgw/runners/kubernetes"
	"github.com/buildgw/buildgw/workspace"
)

// kanikoRunner makes the kaniko runner of cfg and checks that this host
// can run its sandboxes. Without cgroups (a laptop, an unprivileged
// container) builds still run, with time and context limits only.
func kanikoRunner(ctx context.Context, cfg Config, log *slog.Logger) (*kaniko.Runner, error) {
	k := cfg.Runners.Kaniko
	exe := k.Executor
	if exe == "" {
		exe = findExecutor()
	}
	opts := []kaniko.Option{kaniko.WithExecutor(exe), kaniko.WithUser(k.User), kaniko.WithFlags(k.Flags...),
		kaniko.WithNetwork(k.Network), kaniko.WithNice(k.Nice), kaniko.WithEgressRefuse(cfg.Runners.EgressRefuse...),
		kaniko.WithWorkspaceLimit(cfg.WorkspaceMaxBytes)}
	if !k.DisableLayerCache {
		opts = append(opts, kaniko.WithLayerCache(workspace.NewLayout(cfg.StateDir).LayerCache), kaniko.WithLayerCacheMaxBytes(k.LayerCacheMaxBytes),
			kaniko.WithResultCache(workspace.NewLayout(cfg.StateDir).ResultCache, k.ResultCacheMaxBytes))
	}
	r, err := kaniko.New(append(opts, kaniko.WithLimits(k.MemoryMax, k.PidsMax))...)
	if errors.Is(err, kaniko.ErrNoCgroups) {
		log.Warn("sandboxes run without memory and pids limits", "error", err)
		r, err = kaniko.New(opts...)
	}
	if err != nil {
		return nil, err
	}
	if err := r.Available(ctx); err != nil {
		return nil, fmt.Errorf("kaniko runner: %w", err)
	}
	if err := r.CheckIDRanges(); err != nil {
		// Builds on base images owned by low ids still work.
		log.Warn("kaniko runner: subordinate id range too small", "error", err)
	}
	return r, nil
}

// dindRunner makes the dind runner of cfg, or nil if it is disabled. A
// host without dockerd gets one all the same: /readyz says why it cannot
// run, and builds that ask for it get a 400.
func dindRunner(cfg Config, log *slog.Logger) (*dind.Runner, error) {
	if cfg.Runners.Dind.Disabled {
		return nil, nil
	}
	opts, dataRoot := cfg.dindOptions()
	r, err := dind.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("runners.dind: %w", err)
	}
	log.Info("dind runner", "data_root", dataRoot)
	return r, nil
}

// kubernetesRunner makes the kubernetes runner of cfg, or nil if it is
// not enabled. Its data server listens from here on; Close stops it.
func kubernetesRunner(cfg Config, log *slog.Logger) (*kubernetes.Runner, error) {
	k := cfg.Runners.Kubernetes
	if !k.Enabled {
		return nil, nil
	}
	opts := []kubernetes.Option{
		kubernetes.WithDataServer(k.DataListen, k.DataURL),
		kubernetes.WithTimeout(time.Duration(cfg.JobTimeout)),
	}
	if k.Kubeconfig != "" {
		opts = append(opts, kubernetes.WithKubeconfig(k.Kubeconfig))
	}
	if k.Namespace != "" {
		opts = append(opts, kubernetes.WithNamespace(k.Namespace))
	}
	if k.Image != "" || k.ImagePullPolicy != "" {
		img, pull := k.Image, corev1.PullPolicy(k.ImagePullPolicy)
		if img == "" {
			img = kubernetes.DefaultImage
		}
		if pull == "" {
			pull = corev1.PullIfNotPresent
		}
		opts = append(opts, kubernetes.WithImage(img, pull))
	}
	if k.SeccompProfile != "" {
		opts = append(opts, kubernetes.WithSeccompProfile(k.SeccompProfile))
	}
	if k.User != 0 {
		opts = append(opts, kubernetes.WithUser(k.User))
	}
	if k.Network != "" {
		opts = append(opts, kubernetes.WithNetwork(k.Network))
	}
	if k.Refuse != nil {
		opts = append(opts, kubernetes.WithRefuse(k.Refuse...))
	}
	if k.Instance != "" {
		opts = append(opts, kubernetes.WithInstance(k.Instance))
	}
	if k.MaxOutputBytes != 0 {
		opts = append(opts, kubernetes.WithMaxOutputBytes(k.MaxOutputBytes))
	}
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	set := false
	for _, q := range []struct {
		key, value string
		list       corev1.ResourceList
		name       corev1.ResourceName
		def        string
	}{
		{"cpu_request", k.CPURequest, res.Requests, corev1.ResourceCPU, "500m"},
		{"memory_request", k.MemoryRequest, res.Requests, corev1.ResourceMemory, "1Gi"},
		{"cpu_limit", k.CPULimit, res.Limits, corev1.ResourceCPU, "2"},
		{"memory_limit", k.MemoryLimit, res.Limits, corev1.ResourceMemory, "4Gi"},
		{"ephemeral_storage_limit", k.EphemeralStorageLimit, res.Limits, corev1.ResourceEphemeralStorage, "20Gi"},
	} {
		v := q.value
		if v == "" {
			v = q.def
		} else {
			set = true
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("runners.kubernetes.%s: %q: %w", q.key, v, err)
		}
		q.list[q.name] = qty
	}
	if set {
		opts = append(opts, kubernetes.WithResources(res))
	}
	r, err := kubernetes.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("runners.kubernetes: %w", err)
	}
	log.Info("kubernetes runner", "data_url", r.DataURL())
	return r, nil
}

// Bounds of a default tmpfs size: the dind runner's data roots at most
// maxDefaultTmpfs; below minDefaultTmpfs, any tmpfs goes to disk instead.
const (
	maxDefaultTmpfs = 8 << 30
	minDefaultTmpfs = 1 << 30
)

// dindOptions returns the dind runner's options for this configuration
// and where its data roots go, for the start-up log.
func (c Config) dindOptions() ([]dind.Option, string) {
	d := c.Runners.Dind
	// A job's daemon, with every container it runs, is one sandbox: the
	// kaniko runner's limits bound it too.
	o := []dind.Option{dind.WithLimits(c.Runners.Kaniko.MemoryMax, c.Runners.Kaniko.PidsMax)}
	if d.Dockerd != "" {
		o = append(o, dind.WithDockerd(d.Dockerd))
	}
	if d.Docker != "" {
		o = append(o, dind.WithDocker(d.Docker))
	}
	if d.Buildx != "" {
		o = append(o, dind.WithBuildx(d.Buildx))
	}
	if d.StorageDriver != "" {
		o = append(o, dind.WithStorageDriver(d.StorageDriver))
	}
	if d.StartTimeout != 0 {
		o = append(o, dind.WithStartTimeout(time.Duration(d.StartTimeout)))
	}
	if d.Network != "" {
		o = append(o, dind.WithNetwork(d.Network))
	}
	if len(c.Runners.EgressRefuse) > 0 {
		o = append(o, dind.WithEgressRefuse(c.Runners.EgressRefuse...))
	}
	if d.DataRoot == "disk" {
		return o, "disk"
	}
	size := d.TmpfsBytes
	if size == 0 {
		conc := c.Concurrency
		if conc <= 0 {
			conc = runtime.NumCPU()
		}
		var ok bool
		if size, ok = defaultTmpfsSize(int64(2*conc), maxDefaultTmpfs); !ok {
			return o, fmt.Sprintf("disk (%d MiB of memory per job is too little for a tmpfs)", size>>20)
		}
	}
	return append(o, dind.WithTmpfs(size)), fmt.Sprintf("tmpfs of %d MiB", size>>20)
}

// findExecutor looks for kaniko-executor next to the running binary, then
// on PATH.
func findExecutor() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "kaniko-executor")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("kaniko-executor"); err == nil {
		return p
	}
	return "kaniko-executor"
}

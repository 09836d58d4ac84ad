package gateway

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKubernetesRunner(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// New only reads the kubeconfig; nothing dials the cluster.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if r, err := kubernetesRunner(cfg, log); r != nil || err != nil {
		t.Fatalf("kubernetesRunner(disabled) = %v, %v; want nil, nil", r, err)
	}
	cfg.Runners.Kubernetes = KubernetesRunner{Enabled: true, Kubeconfig: kc, DataListen: "127.0.0.1:0", DataURL: "https://10.20.30.40:8444/"}
	r, err := kubernetesRunner(cfg, log)
	if err != nil {
		t.Fatalf("kubernetesRunner: %v", err)
	}
	defer r.Close()
	if got, want := r.DataURL(), "https://10.20.30.40:8444"; got != want {
		t.Errorf("DataURL() = %q, want %q", got, want)
	}
	cfg.Runners.Kubernetes.MemoryLimit = "lots"
	if r, err := kubernetesRunner(cfg, log); err == nil || !strings.Contains(err.Error(), "runners.kubernetes.memory_limit") {
		if r != nil {
			r.Close()
		}
		t.Errorf("kubernetesRunner(memory_limit: lots) = %v, want an error naming runners.kubernetes.memory_limit", err)
	}
}

// Package testcluster gives tests the one-node Kubernetes of
// scripts/cluster: a real etcd, API server, controller manager, scheduler
// and kubelet on a private containerd, all on loopback. The cluster
// outlives a test: Start reuses a running one (scripts/test starts it once
// and stops it at the end; by hand, run scripts/cluster down).
//
// The client here is plain HTTPS with the kubeconfig's client certificate
// and k8s.io/api types; client-go comes with the Kubernetes runner.
package testcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/buildgw/buildgw/internal/testenv"
)

// KubeconfigEnv names a kubeconfig of a running cluster to use instead of
// running scripts/cluster up (scripts/test sets it).
const KubeconfigEnv = "BUILDGW_KUBECONFIG"

// Image is the busybox image scripts/cluster imports into the cluster's
// containerd; Pods that use it need imagePullPolicy: Never, as there is no
// registry to pull from.
const Image = "buildgw.local/busybox:1"

// Cluster is a running cluster with cluster-admin credentials.
type Cluster struct {
	// Kubeconfig is the path of a cluster-admin kubeconfig.
	Kubeconfig string
	// Server is the API server's URL.
	Server string
	client *http.Client
}

// Start returns the cluster of $BUILDGW_KUBECONFIG, or runs scripts/cluster
// up, which starts one unless one is running (the first time it builds
// Kubernetes, which takes long: scripts/test builds it before the tests).
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, _, err := Up(context.Background(), testenv.ModuleRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Up is Start for programs that have no testing.TB (benchmarks), with
// root the repository's root. started reports whether scripts/cluster up
// started the cluster, rather than finding it running: then the caller
// should run Down when done.
func Up(ctx context.Context, root string) (c *Cluster, started bool, err error) {
	if os.Getuid() != 0 {
		return nil, false, errors.New("testcluster: the cluster needs root (cgroups, network namespace, containerd)")
	}
	if path := os.Getenv(KubeconfigEnv); path != "" {
		c, err := Load(path)
		return c, false, err
	}
	// Where scripts/cluster keeps the kubeconfig of a running cluster.
	state := os.Getenv("BUILDGW_CLUSTER_DIR")
	if state == "" {
		state = filepath.Join(root, ".tools", "cluster")
	}
	running := false
	if prev, err := Load(filepath.Join(state, "admin.kubeconfig")); err == nil {
		pctx, cancel := context.WithTimeout(ctx, testenv.Scale(10*time.Second))
		var s string
		running = prev.Do(pctx, http.MethodGet, "/readyz", nil, &s) == nil
		cancel()
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "cluster"), "up")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, false, fmt.Errorf("scripts/cluster up: %w\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if c, err = Load(lines[len(lines)-1]); err != nil {
		return nil, false, err
	}
	return c, !running, nil
}

// Down runs scripts/cluster down in the repository at root: it stops the
// cluster and removes its state.
func Down(root string) error {
	out, err := exec.Command(filepath.Join(root, "scripts", "cluster"), "down").CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/cluster down: %w\n%s", err, out)
	}
	return nil
}

// kubeconfig holds the fields of a kubeconfig that Load reads: the first
// cluster and user, with files or inline data.
type kubeconfig struct {
	Clusters []struct {
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData []byte `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		User struct {
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData []byte `json:"client-certificate-data"`
			ClientKey             string `json:"client-key"`
			ClientKeyData         []byte `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
}

// Load reads a kubeconfig with a client certificate, as scripts/cluster
// writes them.
func Load(path string) (*Cluster, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("parsing kubeconfig %s: %w", path, err)
	}
	if len(kc.Clusters) == 0 || len(kc.Users) == 0 {
		return nil, fmt.Errorf("kubeconfig %s: want a cluster and a user", path)
	}
	cl, u := kc.Clusters[0].Cluster, kc.Users[0].User
	ca, err := fileOrData(cl.CertificateAuthority, cl.CertificateAuthorityData)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: certificate authority: %w", path, err)
	}
	crt, err := fileOrData(u.ClientCertificate, u.ClientCertificateData)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: client certificate: %w", path, err)
	}
	key, err := fileOrData(u.ClientKey, u.ClientKeyData)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: client key: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("kubeconfig %s: no certificate in the certificate authority", path)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: client key pair: %w", path, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	return &Cluster{Kubeconfig: path, Server: strings.TrimSuffix(cl.Server, "/"), client: &http.Client{Transport: tr}}, nil
}

func fileOrData(file string, data []byte) ([]byte, error) {
	if len(data) > 0 {
		return data, nil
	}
	if file == "" {
		return nil, fmt.Errorf("neither a file nor data")
	}
	return os.ReadFile(file)
}

// StatusError is the API server's answer to a request that failed.
type StatusError struct {
	Method, Path string
	Code         int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Code, e.Body)
}

// Do sends a request to the API server (path from /api or /apis on) with
// in, if not nil, as its JSON body, and decodes a JSON answer into out if
// out is not nil. An answer other than 2xx is a *StatusError.
func (c *Cluster) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, body)
	if err != nil {
		return fmt.Errorf("making %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if _, text := out.(*string); !text {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Method: method, Path: path, Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	if s, ok := out.(*string); ok {
		*s = string(b)
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding %s %s: %w", method, path, err)
	}
	return nil
}

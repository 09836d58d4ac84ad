package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DockerRegistry is a running Debian docker-registry (distribution 2.8).
type DockerRegistry struct {
	Host string // 127.0.0.1:port
	// Set when started WithAuth: htpasswd credentials, and TLS trusted
	// through CAFile.
	Username, Password string
	PasswordFile       string
	CAFile             string
	// Puller is a second account, for the read-only pull credentials a
	// gateway may give sandboxes (docker-registry's htpasswd has no
	// read-only users; the tests only need them to differ).
	Puller, PullerPassword, PullerPasswordFile string
}

// StartDockerRegistry runs docker-registry on a free loopback port until
// the test ends. With auth it serves TLS and requires htpasswd
// credentials; without, it serves plain HTTP to anyone (for base images).
func StartDockerRegistry(t testing.TB, auth bool) *DockerRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry not found: run scripts/setup (it installs Debian's docker-registry)")
	}
	dir := t.TempDir()
	host := freeAddr(t)
	r := &DockerRegistry{Host: host}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), host)
	if auth {
		r.Username = "pusher"
		r.Password = "pw-" + randomHex(t, 16)
		r.PasswordFile = filepath.Join(dir, "password")
		writeFile(t, r.PasswordFile, r.Password+"\n", 0o600)
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		r.Puller = "puller"
		r.PullerPassword = "pull-" + randomHex(t, 16)
		r.PullerPasswordFile = filepath.Join(dir, "puller-password")
		writeFile(t, r.PullerPasswordFile, r.PullerPassword+"\n", 0o600)
		pullHash, err := bcrypt.GenerateFromPassword([]byte(r.PullerPassword), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		writeFile(t, htpasswd, r.Username+":"+string(hash)+"\n"+r.Puller+":"+string(pullHash)+"\n", 0o600)
		cert, key, ca := SelfSigned(t, dir)
		r.CAFile = ca
		cfg += fmt.Sprintf(`  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: buildgw-test
    path: %s
`, cert, key, htpasswd)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	writeFile(t, cfgPath, cfg, 0o600)
	cmd := exec.Command(bin, "serve", cfgPath)
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	if err := waitRegistry(r, 20*time.Second); err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("docker-registry did not start: %v\n%s", err, b)
	}
	return r
}

// HTTPClient returns a client that trusts the registry's CA.
func (r *DockerRegistry) HTTPClient() *http.Client {
	if r.CAFile == "" {
		return http.DefaultClient
	}
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(r.CAFile)
	pool.AppendCertsFromPEM(b)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// URL is the registry's base URL.
func (r *DockerRegistry) URL() string {
	if r.CAFile != "" {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func waitRegistry(r *DockerRegistry, d time.Duration) error {
	c := r.HTTPClient()
	deadline := time.Now().Add(Scale(d))
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(r.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := LoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// FreeAddr returns a loopback address with a port free at the time.
func FreeAddr(t testing.TB) string { return freeAddr(t) }

// LoopbackAddr returns a loopback address whose port was free a moment
// ago, for servers that must be told their address before they start
// (benchmarks, which have no testing.TB, call it directly).
func LoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// SelfSignedIP writes a CA and a certificate for ip signed by it into dir.
func SelfSignedIP(t testing.TB, dir, ip string) (cert, key, ca string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "buildgw test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: ip},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		DNSNames:     []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	writeFile(t, cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})), 0o644)
	writeFile(t, key, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})), 0o600)
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), 0o644)
	return cert, key, ca
}

// SelfSigned writes a CA and a certificate for 127.0.0.1 into dir.
func SelfSigned(t testing.TB, dir string) (cert, key, ca string) {
	return SelfSignedIP(t, dir, "127.0.0.1")
}

func writeFile(t testing.TB, p, s string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

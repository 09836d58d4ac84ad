package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildgw/buildgw/audit"
	"github.com/buildgw/buildgw/basestore"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/push"
)

// registryAccess turns the registries' configuration into the pusher,
// which holds the push credentials, and the builder options that say what
// sandboxes may know: insecure registries and extra CAs. No credential
// goes into the options: no runner pulls (both get their base images from
// the gateway's store), so sandboxes need none.
//
// It also returns how the gateway itself fetches base images from each
// registry: with the registry's read-only pull account if it has one,
// else with its push account, and with its CA; and every password it read.
func (c *Config) registryAccess() (*push.Pusher, []jobs.Option, []basestore.Option, []string, error) {
	regs := map[string]push.Registry{}
	var err error
	if c.DockerConfig != "" {
		if regs, err = readDockerConfig(c.DockerConfig); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("docker_config: %w", err)
		}
	}
	var (
		insecure []string
		secrets  []string
		extraCAs []byte
		fetch    = map[string][]remote.Option{}
		// Apart from fetch: the store puts its bounds around each.
		transports = map[string]http.RoundTripper{}
	)
	for host, r := range c.Registries {
		pr := push.Registry{Username: r.Username, CAFile: r.CAFile, Insecure: r.Insecure}
		if r.PasswordFile != "" {
			pw, err := readSecret(r.PasswordFile)
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("reading password of registry %s: %w", host, err)
			}
			pr.Password = pw
		}
		regs[host] = pr
		if r.Insecure {
			insecure = append(insecure, host)
		}
		var pem []byte
		if r.CAFile != "" {
			if pem, err = os.ReadFile(r.CAFile); err != nil {
				return nil, nil, nil, nil, fmt.Errorf("reading CA file of registry %s: %w", host, err)
			}
			extraCAs = append(extraCAs, pem...)
		}
		auth := authn.Authenticator(authn.Anonymous)
		if pr.Username != "" || pr.Password != "" {
			auth = &authn.Basic{Username: pr.Username, Password: pr.Password}
		}
		if sp := r.SandboxPull; sp != nil {
			pw, err := readSecret(sp.PasswordFile)
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("reading sandbox pull password of registry %s: %w", host, err)
			}
			auth = &authn.Basic{Username: sp.Username, Password: pw}
			secrets = append(secrets, pw)
		}
		fetch[host] = append(fetch[host], remote.WithAuth(auth))
		if r.CAFile != "" {
			tr, err := caTransport(pem)
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("CA file of registry %s: %w", host, err)
			}
			transports[host] = tr
		}
	}
	// Registries known only from the Docker config: their push account.
	for host, r := range regs {
		if r.Password != "" {
			secrets = append(secrets, r.Password)
		}
		if _, ok := fetch[host]; !ok && (r.Username != "" || r.Password != "") {
			fetch[host] = []remote.Option{remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password})}
		}
	}
	p, err := push.New(regs, push.WithRetryFor(time.Duration(c.Push.RetryFor)), push.WithRequestTimeout(time.Duration(c.Push.RequestTimeout)))
	if err != nil {
		return nil, nil, nil, nil, err
	}
	fetchOpts := []basestore.Option{
		basestore.WithRemoteOptions(func(reg name.Registry) []remote.Option { return fetch[reg.RegistryStr()] }),
		basestore.WithTransport(func(reg name.Registry) http.RoundTripper { return transports[reg.RegistryStr()] }),
	}
	return p, []jobs.Option{
		jobs.WithInsecureRegistries(insecure...),
		jobs.WithExtraCAs(extraCAs),
	}, fetchOpts, secrets, nil
}

// caTransport trusts the PEM roots in pem besides the system's.
func caTransport(pem []byte) (http.RoundTripper, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("the file holds no PEM certificate")
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// newAuditLog opens the audit log the config asks for; nil if none. It
// redacts secrets from every record.
func newAuditLog(a Audit, secrets []string) (*audit.Logger, error) {
	var opts []audit.Option
	if a.File != "" {
		opts = append(opts, audit.WithFile(a.File))
		if a.MaxSize > 0 {
			opts = append(opts, audit.WithMaxSize(a.MaxSize))
		}
		if a.MaxBackups > 0 {
			opts = append(opts, audit.WithMaxBackups(a.MaxBackups))
		}
	}
	if a.Stdout {
		opts = append(opts, audit.WithWriter(os.Stdout))
	}
	if len(opts) == 0 {
		return nil, nil
	}
	if len(secrets) > 0 {
		opts = append(opts, audit.WithSecrets(func() []string { return secrets }))
	}
	l, err := audit.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return l, nil
}

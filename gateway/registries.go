package gateway

import (
	"fmt"
	"os"
	"strings"

	"github.com/buildgw/buildgw/builder"
	"github.com/buildgw/buildgw/builder/audit"
	"github.com/buildgw/buildgw/builder/push"
)

// registryAccess turns the registries' configuration into the pusher,
// which holds the push credentials, and the builder options that say what
// sandboxes may know: insecure registries, read-only pull accounts and
// extra CAs. Push credentials never go into the options.
func (c *Config) registryAccess() (*push.Pusher, []builder.Option, error) {
	regs := map[string]push.Registry{}
	if c.DockerConfig != "" {
		var err error
		if regs, err = readDockerConfig(c.DockerConfig); err != nil {
			return nil, nil, fmt.Errorf("docker_config: %w", err)
		}
	}
	var (
		insecure []string
		extraCAs []byte
		pull     = map[string]builder.Credential{}
	)
	for host, r := range c.Registries {
		pr := push.Registry{Username: r.Username, CAFile: r.CAFile, Insecure: r.Insecure}
		if r.PasswordFile != "" {
			pw, err := readSecret(r.PasswordFile)
			if err != nil {
				return nil, nil, fmt.Errorf("reading password of registry %s: %w", host, err)
			}
			pr.Password = pw
		}
		regs[host] = pr
		if r.Insecure {
			insecure = append(insecure, host)
		}
		if r.CAFile != "" {
			pem, err := os.ReadFile(r.CAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("reading CA file of registry %s: %w", host, err)
			}
			extraCAs = append(extraCAs, pem...)
		}
		if sp := r.SandboxPull; sp != nil {
			pw, err := readSecret(sp.PasswordFile)
			if err != nil {
				return nil, nil, fmt.Errorf("reading sandbox pull password of registry %s: %w", host, err)
			}
			pull[host] = builder.Credential{Username: sp.Username, Password: pw}
		}
	}
	p, err := push.New(regs)
	if err != nil {
		return nil, nil, err
	}
	return p, []builder.Option{
		builder.WithInsecureRegistries(insecure...),
		builder.WithPullCredentials(pull),
		builder.WithExtraCAs(extraCAs),
	}, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// newAuditLog opens the audit log the config asks for; nil if none.
func newAuditLog(a Audit) (*audit.Logger, error) {
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
	l, err := audit.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return l, nil
}

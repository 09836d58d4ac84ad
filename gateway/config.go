// Package gateway assembles a running buildgw from its configuration: it
// loads and validates the YAML config once, builds the runners, the
// pusher, the job manager and the HTTP server, and serves until stopped.
package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/buildgw/buildgw/api/server"
)

// Config is the gateway's configuration file. Every field has a default;
// see DefaultConfig and examples/deploy/buildgw.yaml.
type Config struct {
	// Listen is the API's address. Default ":8443". Anything but a
	// loopback address requires TLS.
	Listen string `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
	// StateDir holds workspaces and logs. Default /var/lib/buildgw.
	StateDir string `yaml:"state_dir"`
	// Concurrency is how many builds run at once. Default: number of CPUs.
	Concurrency int `yaml:"concurrency"`
	// JobTimeout bounds one build. Default 1h.
	JobTimeout Duration      `yaml:"job_timeout"`
	Context    ContextLimits `yaml:"context"`
	// Tokens are the static bearer tokens, by name, stored as sha256.
	Tokens []Token `yaml:"tokens"`
	// Registries holds push credentials and trust, by host[:port].
	Registries map[string]Registry `yaml:"registries"`
	Runners    Runners             `yaml:"runners"`
}

// TLS is the listener's certificate.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ContextLimits bound an uploaded build context.
type ContextLimits struct {
	// MaxBytes of file content after decompression. Default 2 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxFiles in the archive. Default 100000.
	MaxFiles int `yaml:"max_files"`
}

// Token is one static bearer token.
type Token struct {
	Name string `yaml:"name"`
	// SHA256 is the hex sha256 of the token (`buildgw hash-token`).
	SHA256 string `yaml:"sha256"`
}

// Registry is a push destination's credentials and trust.
type Registry struct {
	Username string `yaml:"username"`
	// PasswordFile holds the password, so it stays out of the config.
	PasswordFile string `yaml:"password_file"`
	// CAFile is extra PEM roots for this registry.
	CAFile string `yaml:"ca_file"`
	// Insecure allows plain HTTP for pushes, and for FROM in builds.
	Insecure bool `yaml:"insecure"`
}

// Runners configures the build sandboxes.
type Runners struct {
	Kaniko KanikoRunner `yaml:"kaniko"`
}

// KanikoRunner configures the rootless kaniko runner.
type KanikoRunner struct {
	// Executor is the kaniko executor built from cmd/kaniko-executor.
	// Default: kaniko-executor next to the buildgw binary, else on PATH.
	Executor string `yaml:"executor"`
	// User runs the sandboxes when buildgw runs as root. Default
	// buildgw-sandbox; it needs /etc/subuid and /etc/subgid ranges.
	User string `yaml:"user"`
	// Flags are extra kaniko flags. Default none.
	Flags []string `yaml:"flags"`
}

// Duration is a time.Duration written as "90s" or "1h".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:     ":8443",
		StateDir:   "/var/lib/buildgw",
		JobTimeout: Duration(time.Hour),
		Context:    ContextLimits{MaxBytes: 2 << 30, MaxFiles: 100000},
		Runners:    Runners{Kaniko: KanikoRunner{User: "buildgw-sandbox"}},
	}
}

// LoadConfig reads the YAML file at path over the defaults and validates
// it. Unknown keys are errors, so a typo never silently becomes a default.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks the configuration once, at start-up.
func (c *Config) Validate() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("listen: %q is not host:port", c.Listen))
	} else if !isLoopback(host) && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("listen: %q is not loopback, so tls.cert_file and tls.key_file are required", c.Listen))
	}
	for _, f := range []string{c.TLS.CertFile, c.TLS.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				errs = append(errs, fmt.Errorf("tls: %w", err))
			}
		}
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state_dir: %q must be an absolute path", c.StateDir))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency: %d must not be negative", c.Concurrency))
	}
	if c.JobTimeout <= 0 {
		errs = append(errs, errors.New("job_timeout: must be positive"))
	}
	if c.Context.MaxBytes <= 0 || c.Context.MaxFiles <= 0 {
		errs = append(errs, errors.New("context: max_bytes and max_files must be positive"))
	}
	if len(c.Tokens) == 0 {
		errs = append(errs, errors.New("tokens: at least one token is required (hash one with `buildgw hash-token`)"))
	}
	seen := map[string]bool{}
	for i, t := range c.Tokens {
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("tokens[%d]: name is required", i))
		}
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("tokens[%d]: duplicate name %q", i, t.Name))
		}
		seen[t.Name] = true
	}
	if _, err := server.NewTokenAuth(c.tokenHashes()); err != nil {
		errs = append(errs, fmt.Errorf("tokens: %w", err))
	}
	for host, r := range c.Registries {
		if strings.ContainsAny(host, "/ ") || host == "" {
			errs = append(errs, fmt.Errorf("registries: %q is not a host[:port]", host))
		}
		for _, f := range []string{r.PasswordFile, r.CAFile} {
			if f != "" {
				if _, err := os.Stat(f); err != nil {
					errs = append(errs, fmt.Errorf("registries[%s]: %w", host, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) tokenHashes() map[string]string {
	m := map[string]string{}
	for _, t := range c.Tokens {
		m[t.Name] = t.SHA256
	}
	return m
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

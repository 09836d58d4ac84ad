package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	tokenauth "github.com/buildgw/buildgw/auth/token"
)

// DevOptions configures dev mode.
type DevOptions struct {
	// StateDir holds everything dev mode keeps, including dev.env.
	StateDir string
	// Listen is the API address. Default 127.0.0.1:0 (any free port).
	Listen string
	// Executor is the kaniko executor. Default as in KanikoRunner.
	Executor string
	// Workspaces is auto, memory or disk, as in Lifecycle. Default auto.
	Workspaces string
	// AcceptEmptyStore is Config.AcceptEmptyStore.
	AcceptEmptyStore bool
}

// RunDev runs the embedded default: the API and a registry (blobs on
// disk under StateDir), both on loopback, with a generated token. It writes
// StateDir/dev.env with BUILDGW_URL, BUILDGW_TOKEN, BUILDGW_REGISTRY and the
// registry's basic-auth account, BUILDGW_REGISTRY_USER and
// BUILDGW_REGISTRY_PASSWORD, once both listen, and removes it when ctx ends.
func RunDev(ctx context.Context, o DevOptions, log *slog.Logger) error {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if host, _, err := net.SplitHostPort(o.Listen); err != nil || !isLoopback(host) {
		return fmt.Errorf("dev mode listens on loopback only, not %q", o.Listen)
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return err
	}
	// The state directory must be traversable by the sandbox user.
	if err := os.MkdirAll(abs, 0o711); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	blobs := filepath.Join(abs, "registry")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return fmt.Errorf("creating registry directory: %w", err)
	}
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the embedded registry: %w", err)
	}
	token, err := randomSecret("bgw_")
	if err != nil {
		return err
	}
	// Loopback is every local user's: the registry, like the API, answers
	// only to the generated secret, so no one else can read its images or
	// replace a base image under a build.
	regPassword, err := randomSecret("")
	if err != nil {
		return err
	}
	reg := &http.Server{
		Handler:           basicAuth(devRegistryUser, regPassword, registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)), registry.Logger(slog.NewLogLogger(log.Handler(), slog.LevelDebug)))),
		ReadHeaderTimeout: 30 * time.Second,
		// Loopback, but any local user may connect: a kept-alive
		// connection left silent is closed.
		IdleTimeout: 2 * time.Minute,
	}
	go reg.Serve(rln)
	defer reg.Close()
	regHost := rln.Addr().String()
	regPasswordFile := filepath.Join(abs, "registry.password")
	if err := writeFileAtomic(regPasswordFile, []byte(regPassword+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(regPasswordFile)

	cfg := DefaultConfig()
	cfg.Listen = o.Listen
	cfg.StateDir = filepath.Join(abs, "gateway")
	cfg.Tokens = []Token{{Name: "dev", SHA256: tokenauth.HashToken(token)}}
	cfg.Registries = map[string]Registry{regHost: {Insecure: true, Username: devRegistryUser, PasswordFile: regPasswordFile}}
	// Deny by default holds in dev mode too: the dev token may push to the
	// embedded registry only, and read any image (one user: no tenant's
	// images to keep apart). It may use every runner the gateway has; one
	// this host cannot run is refused at submit with the reason why.
	runners := []string{"kaniko"}
	if !cfg.Runners.Dind.Disabled {
		runners = append(runners, "dind")
	}
	cfg.PolicyFile = filepath.Join(abs, "policy.yaml")
	devPolicy := fmt.Sprintf(`# Written by buildgw serve --dev.
rules:
  - name: dev
    match: {kind: token, name: dev}
    allow:
      destinations: [%s/**]
      from: ["*/**"]
      runners: [%s]
`, regHost, strings.Join(runners, ", "))
	if err := writeFileAtomic(cfg.PolicyFile, []byte(devPolicy), 0o600); err != nil {
		return err
	}
	cfg.Runners.Kaniko.Executor = o.Executor
	if o.Workspaces != "" {
		cfg.Workspaces = o.Workspaces
	}
	cfg.AcceptEmptyStore = o.AcceptEmptyStore
	g, err := New(cfg, log)
	if err != nil {
		return err
	}

	env := filepath.Join(abs, "dev.env")
	content := fmt.Sprintf("BUILDGW_URL=%s\nBUILDGW_TOKEN=%s\nBUILDGW_REGISTRY=%s\nBUILDGW_REGISTRY_USER=%s\nBUILDGW_REGISTRY_PASSWORD=%s\n",
		g.URL(), token, regHost, devRegistryUser, regPassword)
	if err := writeFileAtomic(env, []byte(content), 0o600); err != nil {
		return err
	}
	defer os.Remove(env)
	log.Info("dev mode", "url", g.URL(), "registry", regHost, "env", env)
	return g.Serve(ctx)
}

// writeFileAtomic makes a file appear whole, so a script polling for it
// never reads half of it.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("writing %s: %w", path, err), os.Remove(tmp))
	}
	return nil
}

// devRegistryUser is the embedded registry's one account.
const devRegistryUser = "dev"

func randomSecret(prefix string) (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating a secret: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// basicAuth lets through only requests with user's credentials, answering
// others as a registry does, so clients know to send them.
func basicAuth(user, password string, next http.Handler) http.Handler {
	wantUser, wantPassword := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPassword := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		if !ok || subtle.ConstantTimeCompare(gotUser[:], wantUser[:])&subtle.ConstantTimeCompare(gotPassword[:], wantPassword[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="buildgw dev registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required: BUILDGW_REGISTRY_USER and BUILDGW_REGISTRY_PASSWORD from dev.env"}]}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

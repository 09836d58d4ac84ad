package cmd

import (
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/gateway"
)

// NewCmdServe returns the serve command.
func NewCmdServe() *cobra.Command {
	var (
		configPath string
		dev        bool
		dopts      gateway.DevOptions
		verbose    bool
		dataURL    string
		instance   string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the build API",
		Example: `  # Production: TLS, tokens, registries and runners from a config file
  buildgw serve --config /etc/buildgw/buildgw.yaml

  # Dev mode: loopback API and registry, generated token and registry
  # password, DIR/dev.env
  buildgw serve --dev --state-dir ./.buildgw`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			if dev {
				if configPath != "" {
					return errors.New("--dev and --config exclude each other")
				}
				if dopts.StateDir == "" {
					return errors.New("--dev needs --state-dir")
				}
				return gateway.RunDev(cmd.Context(), dopts, log)
			}
			if configPath == "" {
				return errors.New("--config is required (or --dev for dev mode)")
			}
			cfg, err := gateway.LoadConfig(configPath)
			if err != nil {
				return err
			}
			if dopts.StateDir != "" {
				cfg.StateDir = dopts.StateDir
			}
			cfg.AcceptEmptyStore = dopts.AcceptEmptyStore
			if dataURL != "" {
				cfg.Runners.Kubernetes.DataURL = dataURL
			}
			if instance != "" {
				cfg.Runners.Kubernetes.Instance = instance
			}
			g, err := gateway.New(cfg, log)
			if err != nil {
				return err
			}
			return g.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", os.Getenv("BUILDGW_CONFIG"), "config file (env BUILDGW_CONFIG)")
	f.BoolVar(&dev, "dev", false, "dev mode: loopback only, embedded registry, generated token")
	f.StringVar(&dopts.StateDir, "state-dir", "", "state directory (overrides the config's state_dir)")
	f.StringVar(&dopts.Listen, "listen", "", "dev mode API address (default 127.0.0.1:0, any free port)")
	f.StringVar(&dopts.Executor, "executor", "", "dev mode kaniko executor (default: kaniko-executor beside buildgw, else on PATH)")
	f.StringVar(&dopts.Workspaces, "workspaces", "", "dev mode: where workspaces live, auto, memory or disk (default auto, as the config's workspaces)")
	f.BoolVar(&dopts.AcceptEmptyStore, "accept-empty-store", false, "start even though the used state directory's jobs.db is missing or empty, forgetting earlier builds")
	// A Deployment knows its Pod's address and name only once the Pod
	// runs: it passes them from the downward API, as
	// --kubernetes-data-url=https://$(POD_IP):8444 and, for replicas that
	// must not reap each other's build Pods at start-up,
	// --kubernetes-instance=$(POD_NAME).
	f.StringVar(&dataURL, "kubernetes-data-url", "", "the URL by which build Pods reach the kubernetes runner's data server (overrides runners.kubernetes.data_url)")
	f.StringVar(&instance, "kubernetes-instance", "", "the kubernetes runner's instance label, whose leftover Pods the gateway deletes at start-up (overrides runners.kubernetes.instance)")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}

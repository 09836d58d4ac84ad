package cmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/gateway"
)

// NewCmdBackup returns the backup command.
func NewCmdBackup() *cobra.Command {
	var stateDir, configPath string
	cmd := &cobra.Command{
		Use:   "backup OUT",
		Short: "Copy the job store (state_dir/jobs.db) to OUT, consistently, while the gateway runs or not",
		Long: `Copy the job store (state_dir/jobs.db) to OUT (mode 0600: it holds identities
and build specs). The copy is written to a new file in OUT's directory, which
then replaces OUT: an existing file or symbolic link there is replaced, never
written through, and a failed backup leaves it as it was. A running gateway on the state directory serves the copy over
its socket state_dir/admin/backup.sock, without stopping builds; when none runs,
backup holds the state directory's lock while it reads, so none starts meanwhile.

To restore: stop the gateway, copy the backup to state_dir/jobs.db, start it.`,
		Example: `  buildgw backup --state-dir /var/lib/buildgw /backup/jobs-$(date +%F).db
  buildgw backup --config /etc/buildgw/buildgw.yaml jobs.db`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := stateDir
			if dir == "" {
				if configPath == "" {
					return errors.New("--state-dir or --config is required")
				}
				cfg, err := gateway.LoadConfig(configPath)
				if err != nil {
					return err
				}
				dir = cfg.StateDir
			}
			n, err := gateway.BackupStore(cmd.Context(), dir, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "buildgw: job store of %s copied to %s (%d bytes)\n", dir, args[0], n)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the gateway's state directory")
	f.StringVar(&configPath, "config", os.Getenv("BUILDGW_CONFIG"), "take state_dir from this config file (env BUILDGW_CONFIG)")
	return cmd
}

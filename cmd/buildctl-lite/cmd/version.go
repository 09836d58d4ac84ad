package cmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/version"
)

// NewCmdVersion returns the version command.
func NewCmdVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "buildctl-lite %s (commit %s)\n", version.Version, version.Commit())
		},
	}
}

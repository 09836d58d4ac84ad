package cmd

import "github.com/spf13/cobra"

// NewCmdLogs returns the logs command.
func NewCmdLogs(g *globals) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:     "logs [-f] BUILD_ID",
		Short:   "Print a build's log",
		Example: "  buildctl-lite logs -f 3kq7m2x5...",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.Logs(cmd.Context(), args[0], follow, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the build ends")
	return cmd
}

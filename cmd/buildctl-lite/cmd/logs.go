package cmd

import (
	"strings"

	"github.com/spf13/cobra"
)

// NewCmdLogs returns the logs command.
func NewCmdLogs(g *globals) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] BUILD_ID",
		Short: "Print a build's log",
		Long: `logs prints a build's log. With -f it keeps printing until the build ends.
With --output json it prints {"id", "log"} once the log is complete.`,
		Example: `  buildctl-lite logs 3kq7m2x5...
  buildctl-lite logs -f 3kq7m2x5...`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeBuildIDs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if !g.json() {
				return c.Logs(cmd.Context(), args[0], follow, cmd.OutOrStdout())
			}
			var log strings.Builder
			if err := c.Logs(cmd.Context(), args[0], follow, &log); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]string{"id": args[0], "log": log.String()})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the build ends")
	return cmd
}

package cmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api/client"
)

// NewCmdLogs returns the logs command.
func NewCmdLogs(g *globals) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] BUILD_ID",
		Short: "Print a build's log",
		Long: `logs prints a build's log. With -f it keeps printing until the build ends.
With --output json it prints {"id", "log"} once the log is complete.

With -f, a build that a gateway restart interrupted ends logs with exit
status 4: it will not resume, and logs cannot send it again (it has no
context); run the submit that started it again.`,
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
				if err := c.Logs(cmd.Context(), args[0], follow, cmd.OutOrStdout()); err != nil {
					return err
				}
				return checkInterrupted(cmd, c, args[0], follow)
			}
			var log strings.Builder
			if err := c.Logs(cmd.Context(), args[0], follow, &log); err != nil {
				return err
			}
			if err := printJSON(cmd.OutOrStdout(), map[string]string{"id": args[0], "log": log.String()}); err != nil {
				return err
			}
			return checkInterrupted(cmd, c, args[0], follow)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the build ends")
	return cmd
}

// checkInterrupted ends a followed log of a build that a gateway restart
// interrupted with exitRestarted and a hint: without the context there is
// nothing to send again.
func checkInterrupted(cmd *cobra.Command, c *client.Client, id string, follow bool) error {
	if !follow {
		return nil
	}
	b, err := c.Get(cmd.Context(), id)
	if err != nil {
		return err
	}
	if b.Interrupted() {
		return &ExitError{Code: exitRestarted, Err: fmt.Errorf("build %s: %s and will not resume; run the submit that started it again (buildctl-lite submit ... CONTEXT_DIR)", b.ID, b.Error)}
	}
	return nil
}

package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
)

// NewCmdCancel returns the cancel command.
func NewCmdCancel(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "cancel BUILD_ID",
		Short:             "Stop a build",
		Long:              "cancel stops a queued or running build and prints its state afterwards.",
		Example:           "  buildctl-lite cancel 3kq7m2x5...",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeBuildIDs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			b, err := c.Cancel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), b)
			}
			fmt.Fprintln(cmd.OutOrStdout(), b.Status)
			return nil
		},
	}
}

package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
)

// NewCmdCancel returns the cancel command.
func NewCmdCancel(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "cancel BUILD_ID",
		Short:   "Stop a build",
		Example: "  buildctl-lite cancel 3kq7m2x5...",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.Cancel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), b.Status)
			return nil
		},
	}
}

package cmd

import (
	"encoding/json"

	"github.com/spf13/cobra"
)

// NewCmdStatus returns the status command.
func NewCmdStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "status BUILD_ID",
		Short:   "Print a build's state as JSON",
		Example: "  buildctl-lite status 3kq7m2x5...",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(b)
		},
	}
}

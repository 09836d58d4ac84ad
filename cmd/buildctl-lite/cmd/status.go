package cmd

import (
	"github.com/spf13/cobra"
)

// NewCmdStatus returns the status command.
func NewCmdStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status BUILD_ID",
		Short: "Print a build's state as JSON",
		Long: `status prints a build's state as JSON (in both output formats): status,
digest, destinations, error and timestamps.`,
		Example: `  buildctl-lite status 3kq7m2x5...
  buildctl-lite status 3kq7m2x5... | jq -r .digest`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeBuildIDs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			b, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), b)
		},
	}
}

// completeBuildIDs completes a BUILD_ID argument with the caller's builds.
func completeBuildIDs(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := g.client(cmd.ErrOrStderr())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		builds, err := c.List(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var ids []cobra.Completion
		for _, b := range builds {
			ids = append(ids, cobra.CompletionWithDesc(b.ID, string(b.Status)))
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}

package cmd

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api"
)

// NewCmdList returns the list command.
func NewCmdList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List your builds, newest first",
		Example: `  buildctl-lite list
  buildctl-lite list -o json | jq -r '.builds[] | select(.status=="failed") | .id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			builds, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if g.json() {
				if builds == nil {
					builds = []api.Build{}
				}
				return printJSON(cmd.OutOrStdout(), api.BuildList{Builds: builds})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tCREATED\tDESTINATIONS")
			for _, b := range builds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.ID, b.Status, b.CreatedAt.Format(time.RFC3339), strings.Join(b.Destinations, ","))
			}
			return tw.Flush()
		},
	}
}

// Package cmd holds buildctl-lite's commands, one per file.
package cmd

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api/client"
)

// globals are the flags every command shares.
type globals struct {
	server string
	token  string
}

func (g *globals) client() (*client.Client, error) {
	return client.New(g.server, g.token)
}

// New returns the buildctl-lite root command.
func New() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "buildctl-lite",
		Short: "Build container images on a buildgw gateway, without a Docker daemon",
		// One readable line on error, no usage dump.
		SilenceUsage: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", os.Getenv("BUILDGW_URL"), "gateway URL (env BUILDGW_URL)")
	pf.StringVar(&g.token, "token", os.Getenv("BUILDGW_TOKEN"), "bearer token (env BUILDGW_TOKEN)")
	root.AddCommand(NewCmdSubmit(g), NewCmdStatus(g), NewCmdLogs(g), NewCmdCancel(g), NewCmdList(g), NewCmdVersion())
	return root
}

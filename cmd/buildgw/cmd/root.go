// Package cmd holds buildgw's commands, one per file.
package cmd

import "github.com/spf13/cobra"

// New returns the buildgw root command.
func New() *cobra.Command {
	root := &cobra.Command{
		Use:           "buildgw",
		Short:         "A build gateway: CI jobs send build contexts, buildgw builds in a sandbox and pushes",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(NewCmdServe(), NewCmdBackup(), NewCmdHashToken(), NewCmdImport(), NewCmdExecutorImage(), NewCmdPolicy(), NewCmdVersion())
	return root
}

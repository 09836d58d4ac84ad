package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/auth/token"
)

// NewCmdHashToken returns the hash-token command.
func NewCmdHashToken() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-token",
		Short: "Print the sha256 under which a token is stored in the config (reads the token from stdin)",
		Example: `  head -c 32 /dev/urandom | base64 > ci.token
  buildgw hash-token < ci.token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			tok := strings.TrimRight(line, "\r\n")
			if tok == "" {
				if err != nil {
					return fmt.Errorf("reading token from stdin: %w", err)
				}
				return errors.New("empty token on stdin")
			}
			fmt.Fprintln(cmd.OutOrStdout(), token.HashToken(tok))
			return nil
		},
	}
}

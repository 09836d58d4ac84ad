package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// NewCmdLogin returns the login command.
func NewCmdLogin(g *globals) *cobra.Command {
	var tokenStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Check a token against a gateway and save both for later commands",
		Long: `login checks the token against the gateway and saves the server and the token
in the user's config directory (buildgw/config.json, mode 0600; the directory
BUILDGW_CONFIG_DIR, if set). Later commands use them when neither flags nor
BUILDGW_URL/BUILDGW_TOKEN are given.

The token comes from --token, BUILDGW_TOKEN, standard input with --token-stdin,
or a prompt on a terminal.`,
		Example: `  buildctl-lite login --server https://buildgw.example.com
  pass show buildgw | buildctl-lite login --server https://buildgw.example.com --token-stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			server := g.server
			if server == "" {
				server = os.Getenv("BUILDGW_URL")
			}
			if server == "" {
				return errors.New("no server given (set --server or BUILDGW_URL)")
			}
			token := g.token
			if token == "" {
				token = os.Getenv("BUILDGW_TOKEN")
			}
			var err error
			if tokenStdin {
				token, err = readToken(cmd.InOrStdin())
			} else if token == "" {
				token, err = promptToken(cmd)
			}
			if err != nil {
				return err
			}
			if token == "" {
				return errors.New("empty token")
			}
			c, err := g.clientAt(cmd.ErrOrStderr(), server, token)
			if err != nil {
				return err
			}
			// Any authenticated read proves the token.
			if _, err := c.List(cmd.Context()); err != nil {
				return fmt.Errorf("logging in to %s: %w", server, err)
			}
			path, err := saveLogin(g.configDir, savedLogin{Server: strings.TrimRight(server, "/"), Token: token})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"server": server, "config_file": path})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s (saved in %s)\n", server, path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&tokenStdin, "token-stdin", false, "read the token from standard input")
	return cmd
}

// NewCmdLogout returns the logout command.
func NewCmdLogout(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Short:   "Forget the server and token saved by login",
		Example: "  buildctl-lite logout",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := loginFile(g.configDir)
			if err != nil {
				return err
			}
			removed := true
			if err := os.Remove(path); errors.Is(err, os.ErrNotExist) {
				removed = false
			} else if err != nil {
				return fmt.Errorf("removing saved login: %w", err)
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]any{"config_file": path, "removed": removed})
			}
			if removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", path)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "not logged in")
			}
			return nil
		},
	}
}

func readToken(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading token: %w", err)
	}
	return strings.TrimSpace(line), nil
}

func promptToken(cmd *cobra.Command) (string, error) {
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no token given (set --token, BUILDGW_TOKEN or --token-stdin)")
	}
	fmt.Fprint(cmd.ErrOrStderr(), "Token: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return "", fmt.Errorf("reading token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

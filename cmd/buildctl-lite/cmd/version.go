package cmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/version"
)

// NewCmdVersion returns the version command.
func NewCmdVersion(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's version and, if a server is known, the gateway's",
		Long: `version prints buildctl-lite's version and commit, and the gateway's (GET
/version, no token needed) when a server is given or saved. It warns on stderr
when their major or minor versions differ.`,
		Example: `  buildctl-lite version
  buildctl-lite version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := struct {
				Client api.Version  `json:"client"`
				Server *api.Version `json:"server,omitempty"`
			}{Client: api.Version{Version: g.clientVersion, Commit: version.Commit()}}
			server, _, err := g.credentials()
			if err != nil {
				return err
			}
			// The client's version is printed even when the gateway cannot
			// be asked; the exit status says that it could not.
			var serverErr error
			if server != "" {
				c, err := g.client(cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				if out.Server, err = c.Version(cmd.Context()); err != nil {
					serverErr = fmt.Errorf("asking the gateway for its version: %w", err)
				}
			}
			if out.Server != nil {
				if far(out.Client.Version, out.Server.Version) {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: buildctl-lite %s and gateway %s differ in major or minor version; download the matching client from %s/dl/buildctl-lite/OS/ARCH\n",
						out.Client.Version, out.Server.Version, strings.TrimRight(server, "/"))
				}
			}
			if g.json() {
				if err := printJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
				return serverErr
			}
			fmt.Fprintf(cmd.OutOrStdout(), "buildctl-lite %s (commit %s)\n", out.Client.Version, out.Client.Commit)
			if s := out.Server; s != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "buildgw %s (commit %s, kaniko %s)\n", s.Version, s.Commit, s.Kaniko)
			}
			return serverErr
		},
	}
}

// far reports whether two release versions ("v1.2.3", "1.2.0-rc.1")
// differ in major or minor. Versions that are not releases, like "dev",
// are never far from anything.
func far(a, b string) bool {
	ma, oka := majorMinor(a)
	mb, okb := majorMinor(b)
	return oka && okb && ma != mb
}

func majorMinor(v string) (string, bool) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return "", false
	}
	for _, p := range parts[:2] {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return "", false
		}
	}
	return parts[0] + "." + parts[1], true
}

// Package cmd holds buildctl-lite's commands, one per file.
package cmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/api/client"
	"github.com/buildgw/buildgw/version"
)

// Output formats of --output.
const (
	outputText = "text"
	outputJSON = "json"
)

// globals are the flags every command shares. server and token are
// resolved in this order: flag, environment, the file login wrote.
type globals struct {
	server string
	token  string
	output string
	// configDir overrides os.UserConfigDir()/buildgw (env BUILDGW_CONFIG_DIR).
	configDir string
	// clientVersion is this client's release version.
	clientVersion string
	// restartWait bounds the wait for a gateway that restarts while a
	// build is submitted or its log is followed.
	restartWait time.Duration
	// caFile holds CA certificates (PEM) trusted for the gateway on top
	// of the system's (env BUILDGW_CA_FILE).
	caFile string
}

// client returns a client of the gateway; when the gateway's queue is
// full it waits and retries, saying so on stderr.
func (g *globals) client(stderr io.Writer) (*client.Client, error) {
	server, token, err := g.credentials()
	if err != nil {
		return nil, err
	}
	return g.clientAt(stderr, server, token)
}

// clientAt is a client of server that tells stderr when it waits.
func (g *globals) clientAt(stderr io.Writer, server, token string) (*client.Client, error) {
	opts := []client.Option{client.WithRestartWait(g.restartWait), client.WithWaitNotice(func(d time.Duration, reason string) {
		fmt.Fprintf(stderr, "buildctl-lite: %s; next try in %s\n", reason, d.Round(time.Second))
	})}
	hc, err := g.httpClient()
	if err != nil {
		return nil, err
	}
	if hc != nil {
		opts = append(opts, client.WithHTTPClient(hc))
	}
	return client.New(server, token, opts...)
}

// httpClient is an HTTP client that also trusts the CA certificates of
// --ca-file (else BUILDGW_CA_FILE), or nil when none is given. The
// system's roots stay trusted, so one setting serves a gateway behind a
// private CA whatever else the job talks to (SSL_CERT_FILE would replace
// them).
func (g *globals) httpClient() (*http.Client, error) {
	flag, file := "--ca-file", g.caFile
	if file == "" {
		flag, file = "BUILDGW_CA_FILE", os.Getenv("BUILDGW_CA_FILE")
	}
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: reading CA certificates: %w", flag, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", flag, file)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t}, nil
}

// credentials resolves the server and token. A token saved by login is
// only sent to the server it was saved for.
func (g *globals) credentials() (server, token string, err error) {
	server, token = g.server, g.token
	if server == "" {
		server = os.Getenv("BUILDGW_URL")
	}
	if token == "" {
		token = os.Getenv("BUILDGW_TOKEN")
	}
	if server != "" && token != "" {
		return server, token, nil
	}
	saved, err := loadLogin(g.configDir)
	if err != nil {
		return "", "", err
	}
	if saved == nil {
		return server, token, nil
	}
	if server == "" {
		server = saved.Server
	}
	if token == "" && sameServer(server, saved.Server) {
		token = saved.Token
	}
	return server, token, nil
}

func (g *globals) json() bool { return g.output == outputJSON }

// printJSON writes v indented to w, for --output json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// New returns the buildctl-lite root command.
func New() *cobra.Command {
	root := newRoot(&globals{configDir: os.Getenv("BUILDGW_CONFIG_DIR"), clientVersion: version.Version})
	addCompletion(root)
	return root
}

// addCompletion adds cobra's completion command, which writes to root's
// output as set now, with an error for a shell it does not know (cobra's
// own prints its help and exits 0).
func addCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	comp, _, err := root.Find([]string{"completion"})
	if err != nil || comp == root {
		return
	}
	comp.Use = "completion SHELL"
	comp.Args = cobra.ArbitraryArgs
	comp.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		var shells []string
		for _, c := range cmd.Commands() {
			shells = append(shells, c.Name())
		}
		return fmt.Errorf("completion: unknown shell %q: supported shells are %s", args[0], strings.Join(shells, ", "))
	}
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "buildctl-lite",
		Short: "Build container images on a buildgw gateway, without a Docker daemon",
		Long: `buildctl-lite sends a build context to a buildgw gateway, which builds it in a
sandbox and pushes the image itself. No Docker daemon, no socket, no registry
credentials are needed on this side.

The gateway and token come from --server/--token, else BUILDGW_URL and
BUILDGW_TOKEN, else what "buildctl-lite login" saved (a saved token is only
sent to the server it was saved for). A gateway whose certificate comes from a
private CA is trusted with --ca-file or BUILDGW_CA_FILE.

Exit status: 0 on success; 1 on an error, a failed or a cancelled build;
3 when audit finds socket exposure; 4 when a gateway restart interrupted
the build and it was not submitted again (submit gave up, or logs -f, which
has no context to send); 130 on an interrupt.`,
		Example: `  buildctl-lite login --server https://buildgw.example.com
  buildctl-lite submit -t registry.example.com/team/app:dev .
  buildctl-lite list -o json
  buildctl-lite audit .`,
		// One readable line on error, no usage dump.
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.output != outputText && g.output != outputJSON {
				return fmt.Errorf("--output %q: want text or json", g.output)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "", "gateway URL (env BUILDGW_URL, else the one saved by login)")
	pf.StringVar(&g.token, "token", "", "bearer token (env BUILDGW_TOKEN, else the one saved by login)")
	pf.StringVarP(&g.output, "output", "o", outputText, "output format: text or json")
	pf.StringVar(&g.caFile, "ca-file", "", "PEM file of CA certificates to trust for the gateway, besides the system's (env BUILDGW_CA_FILE)")
	pf.DurationVar(&g.restartWait, "restart-wait", 3*time.Minute, "how long to wait for a gateway that cannot be reached or is shutting down, as in a restart: submit's upload sends the context again, a followed build reattaches (0: not at all)")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputText, outputJSON}, cobra.ShellCompDirectiveNoFileComp))
	root.AddCommand(
		NewCmdSubmit(g), NewCmdStatus(g), NewCmdLogs(g), NewCmdCancel(g), NewCmdList(g),
		NewCmdLogin(g), NewCmdLogout(g), NewCmdVersion(g), NewCmdAudit(g),
	)
	wrapErrors(root)
	return root
}

// exitInterrupted is the conventional status of a program ended by
// Ctrl-C (128 + SIGINT).
const exitInterrupted = 130

// Run runs buildctl-lite with args and returns its exit status. An error
// is written to stderr as one line, or as {"error": {"code", "message"}}
// with --output json; an interrupt (ctx ending) ends it with 130, quietly
// unless the command had something to say about it.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{configDir: os.Getenv("BUILDGW_CONFIG_DIR"), clientVersion: version.Version}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	addCompletion(root)
	err := root.ExecuteContext(ctx)
	code := ExitCode(err)
	if ctx.Err() != nil && err != nil {
		code = exitInterrupted
		if errors.Is(err, context.Canceled) {
			return code
		}
	}
	if err == nil {
		return code
	}
	if g.json() {
		e := api.ErrorDetail{Code: "ERROR", Message: err.Error()}
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code != "" {
			e.Code = ce.Code
		}
		json.NewEncoder(stderr).Encode(api.ErrorBody{Error: e})
		return code
	}
	fmt.Fprintln(stderr, "Error:", err)
	return code
}

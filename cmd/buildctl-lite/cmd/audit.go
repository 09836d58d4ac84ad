package cmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/socketaudit"
)

// exitFindings is audit's exit status when it found something, so that a
// pipeline can gate on it (1 stays "the audit itself failed").
const exitFindings = 3

// NewCmdAudit returns the audit command.
func NewCmdAudit(g *globals) *cobra.Command {
	var (
		host   bool
		socket string
		proc   string
	)
	cmd := &cobra.Command{
		Use:   "audit [PATH...]",
		Short: "Find Docker socket exposure in repositories or on this host",
		Long: `audit scans repositories (default: the current directory) for Docker daemon
exposure and prints each finding with file, line and the buildgw replacement:

  .gitlab-ci.yml       docker:dind services, docker.sock volumes, DOCKER_HOST
  Jenkinsfile          -v /var/run/docker.sock, DOCKER_HOST, --privileged
  compose files        docker.sock volumes, privileged: true
  Kubernetes manifests hostPath volumes of the docker socket
  GitLab runner        config.toml volumes with docker.sock, privileged = true

With --host it audits this host instead: the processes that hold the Docker
socket open (from /proc/*/fd, as lsof does) and whether the socket's mode or
ownership is wider than root:docker 0660.

The exit status is 3 when something was found, 1 when the audit failed, 0
when all is clean, so it can gate a pipeline.`,
		Example: `  buildctl-lite audit .
  buildctl-lite audit -o json ~/src/*
  sudo buildctl-lite audit --host`,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range []string{"server", "token", "ca-file"} {
				if cmd.Flags().Changed(n) {
					return fmt.Errorf("audit talks to no gateway: --%s does nothing here", n)
				}
			}
			if host {
				if len(args) > 0 {
					return fmt.Errorf("--host takes no paths")
				}
				return auditHost(cmd, g, proc, socket)
			}
			if len(args) == 0 {
				args = []string{"."}
			}
			findings, err := socketaudit.Scan(args...)
			if err != nil {
				return err
			}
			if g.json() {
				if findings == nil {
					findings = []socketaudit.Finding{}
				}
				if err := printJSON(cmd.OutOrStdout(), map[string]any{"findings": findings}); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				for _, f := range findings {
					fmt.Fprintf(w, "%s:%d: [%s] %s\n    %s\n  instead:\n%s\n\n", f.File, f.Line, f.Kind, f.Problem, f.Text, indent(f.Replacement, "    "))
				}
			}
			if len(findings) > 0 {
				return &ExitError{Code: exitFindings, Err: fmt.Errorf("%d Docker socket exposure(s) found", len(findings))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&host, "host", false, "audit this host's Docker socket instead of repositories")
	f.StringVar(&socket, "socket", socketaudit.DefaultSocket, "the Docker socket, with --host")
	f.StringVar(&proc, "proc", "/proc", "the proc filesystem to read, with --host")
	// audit talks to no gateway: these shadow the global --server and
	// --token, so its help does not offer them, and refuse them if given.
	var unused string
	for _, n := range []string{"server", "token", "ca-file"} {
		f.StringVar(&unused, n, "", "not used by audit")
		f.MarkHidden(n)
	}
	return cmd
}

func auditHost(cmd *cobra.Command, g *globals, proc, socket string) error {
	r, err := socketaudit.ScanHost(proc, socket)
	if err != nil {
		return err
	}
	if g.json() {
		if err := printJSON(cmd.OutOrStdout(), r); err != nil {
			return err
		}
	} else {
		w := cmd.OutOrStdout()
		if !r.Exists {
			fmt.Fprintf(w, "%s: no socket\n", r.Socket)
		} else {
			fmt.Fprintf(w, "%s: mode %s, %s:%s\n", r.Socket, r.Mode, r.Owner, r.Group)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  problem: %s\n", p)
		}
		for _, h := range r.Holders {
			fmt.Fprintf(w, "  %s: pid %d (user %s) fds %v: %s\n", h.Role, h.PID, h.User, h.FDs, h.Command)
		}
	}
	if n := r.Findings(); n > 0 {
		return &ExitError{Code: exitFindings, Err: fmt.Errorf("%s: %d problem(s), %d process(es) holding it", r.Socket, len(r.Problems), len(r.Holders))}
	}
	return nil
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

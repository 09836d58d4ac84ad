package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/auth"
	df "github.com/buildgw/buildgw/dockerfile"
	"github.com/buildgw/buildgw/jobs"
	"github.com/buildgw/buildgw/policy"
)

// NewCmdPolicy returns the policy command.
func NewCmdPolicy() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check policy files offline",
	}
	cmd.AddCommand(newCmdPolicyCheck())
	return cmd
}

func newCmdPolicyCheck() *cobra.Command {
	var identityFile, specFile, dockerfile string
	cmd := &cobra.Command{
		Use:   "check POLICY_FILE",
		Short: "Validate a policy file and, given an identity and a spec, show which rule decides",
		Example: `  # Does the file load?
  buildgw policy check /etc/buildgw/policy.yaml

  # What happens to this GitLab job pushing this spec?
  cat > id.json <<'JSON'
  {"name": "gitlab:project_path:group/app:ref_type:branch:ref:main", "kind": "oidc",
   "issuer": "https://gitlab.example.com",
   "attributes": {"project_path": "group/app", "namespace_path": "group", "ref_protected": "true"}}
  JSON
  echo '{"destinations": ["registry.example.com/group/app:1.2.3"]}' > spec.json
  buildgw policy check policy.yaml --identity id.json --spec spec.json --dockerfile Dockerfile`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, w := range p.Warnings() {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			if identityFile == "" && specFile == "" {
				fmt.Fprintf(out, "%s: %d rules, valid\n", args[0], len(p.Rules()))
				return nil
			}
			if identityFile == "" || specFile == "" {
				return errors.New("--identity and --spec go together")
			}
			var id auth.Identity
			if err := readJSON(identityFile, &id); err != nil {
				return err
			}
			var spec api.BuildSpec
			if err := readJSON(specFile, &spec); err != nil {
				return err
			}
			vs, err := jobs.Validate(spec, []string{"kaniko", "dind", "kubernetes"}, "kaniko")
			if err != nil {
				return err
			}
			req := policy.Request{Identity: id, Destinations: vs.Tags, Runner: vs.Runner}
			if dockerfile != "" {
				src, err := os.ReadFile(dockerfile)
				if err != nil {
					return fmt.Errorf("reading Dockerfile: %w", err)
				}
				// The gateway refuses such a Dockerfile with a 400
				// before the policy decides.
				if req.Dockerfile, err = df.Analyze(src, vs.BuildArgs, vs.Target); err != nil {
					return fmt.Errorf("%s: %w", dockerfile, err)
				}
			}
			d := p.Decide(req)
			verdict := "allow"
			if !d.Allowed {
				verdict = "deny"
			}
			rule := d.Rule
			if rule == "" {
				rule = "(none)"
			}
			fmt.Fprintf(out, "decision: %s\nrule: %s\n", verdict, rule)
			if d.Reason != "" {
				fmt.Fprintf(out, "reason: %s\n", d.Reason)
			}
			if dockerfile == "" {
				fmt.Fprintln(out, "note: no --dockerfile, so base images were not checked")
			}
			if !d.Allowed {
				return fmt.Errorf("denied")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&identityFile, "identity", "", "JSON identity: name, kind, issuer, attributes")
	cmd.Flags().StringVar(&specFile, "spec", "", "JSON BuildSpec, as sent to POST /v1/builds")
	cmd.Flags().StringVar(&dockerfile, "dockerfile", "", "Dockerfile, for the FROM check")
	return cmd
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	return nil
}

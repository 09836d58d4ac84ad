package cmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/runners/kubernetes"
)

// NewCmdExecutorImage returns the executor-image command.
func NewCmdExecutorImage() *cobra.Command {
	var executor, caBundle, tag, out, seccomp string
	cmd := &cobra.Command{
		Use:   "executor-image",
		Short: "Write the kubernetes runner's executor image as a tarball (and its seccomp profile), and print its digest",
		Long: `Writes the image every build Pod of the kubernetes runner runs: the static
kaniko-executor of this release and a CA bundle, nothing else, as a tarball
to push to the cluster's registry (crane push, skopeo copy docker-archive:)
or to import into a node's runtime. With --seccomp-profile it also writes the
Localhost seccomp profile the Pods use, to install on every node as
<kubelet root>/seccomp/` + kubernetes.SeccompProfileName + `.`,
		Example: `  buildgw executor-image --executor /usr/local/bin/kaniko-executor \
      --tag registry.example.com/buildgw/kaniko-executor:1 -o executor.tar \
      --seccomp-profile ` + kubernetes.SeccompProfileName,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tag == "" || out == "" {
				return errors.New("--tag and -o are required")
			}
			img, err := kubernetes.ExecutorImage(executor, caBundle)
			if err != nil {
				return err
			}
			if err := kubernetes.WriteExecutorImage(out, tag, img); err != nil {
				return err
			}
			if seccomp != "" {
				p, err := kubernetes.SeccompProfile()
				if err != nil {
					return err
				}
				if err := os.WriteFile(seccomp, p, 0o644); err != nil {
					return fmt.Errorf("writing the seccomp profile: %w", err)
				}
			}
			d, err := img.Digest()
			if err != nil {
				return err
			}
			// The digest alone on stdout, for scripts.
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&executor, "executor", "/usr/local/bin/kaniko-executor", "the static executor (cmd/kaniko-executor, CGO_ENABLED=0)")
	f.StringVar(&caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA bundle the builds trust (\"\": none)")
	f.StringVarP(&tag, "tag", "t", "", "the image's name, as the runner's image setting names it")
	f.StringVarP(&out, "output", "o", "", "the tarball to write")
	f.StringVar(&seccomp, "seccomp-profile", "", "also write the Pods' Localhost seccomp profile here")
	return cmd
}

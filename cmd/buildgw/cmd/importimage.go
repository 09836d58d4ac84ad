package cmd

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"

	"github.com/buildgw/buildgw/baseimage"
)

// NewCmdImport returns the import command.
func NewCmdImport() *cobra.Command {
	var (
		busybox bool
		command string
	)
	cmd := &cobra.Command{
		Use:   "import (--busybox BUSYBOX_BINARY | ROOTFS_DIR) IMAGE",
		Short: "Push a base image made from a static busybox or a root filesystem directory",
		Long: `Push a base image made locally, for hosts that cannot pull from public registries.
Credentials come from the Docker config (~/.docker/config.json), as with crane;
for the registry BUILDGW_REGISTRY (dev mode's), from BUILDGW_REGISTRY_USER and
BUILDGW_REGISTRY_PASSWORD, as dev.env sets them.`,
		Example: `  buildgw import --busybox /bin/busybox "$BUILDGW_REGISTRY/library/busybox:latest"
  debootstrap --variant=minbase bookworm ./rootfs && buildgw import ./rootfs registry.example.com/base/debian:bookworm`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := name.NewTag(args[1], name.StrictValidation)
			if err != nil {
				return fmt.Errorf("parsing %q: %w", args[1], err)
			}
			var img v1.Image
			if busybox {
				img, err = baseimage.Busybox(args[0])
			} else {
				img, err = baseimage.FromDir(args[0], strings.Fields(command))
			}
			if err != nil {
				return err
			}
			if err := remote.Write(ref, img, remote.WithContext(cmd.Context()), remote.WithAuthFromKeychain(authn.NewMultiKeychain(devKeychain{}, authn.DefaultKeychain))); err != nil {
				return fmt.Errorf("pushing %s: %w", ref, err)
			}
			d, err := img.Digest()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), ref.Context().Digest(d.String()).String())
			return nil
		},
	}
	cmd.Flags().BoolVar(&busybox, "busybox", false, "the first argument is a static busybox binary")
	cmd.Flags().StringVar(&command, "cmd", "/bin/sh", "the image's default command")
	return cmd
}

// devKeychain gives dev mode's registry account, from the environment
// that sourcing dev.env sets, for that registry only.
type devKeychain struct{}

func (devKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host, user := os.Getenv("BUILDGW_REGISTRY"), os.Getenv("BUILDGW_REGISTRY_USER")
	if host == "" || user == "" || r.RegistryStr() != host {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: user, Password: os.Getenv("BUILDGW_REGISTRY_PASSWORD")}, nil
}

// Command kaniko-executor is kaniko's executor, built from the version pinned
// in this module's go.mod so that go.sum fixes exactly what runs in the
// build sandbox. Before kaniko starts it sets up the job's root (see
// runners/kaniko/sandboxinit); the rootless kaniko runner starts it inside fresh
// user, mount, pid and network namespaces. In the kubernetes runner's Pod
// it first fetches the build's data (see runners/kubernetes/podinit).
package main

import (
	"fmt"
	"os"
	_ "unsafe" // go:linkname

	"github.com/GoogleContainerTools/kaniko/cmd/executor/cmd"
	"github.com/GoogleContainerTools/kaniko/pkg/config"
	"github.com/GoogleContainerTools/kaniko/pkg/image"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildgw/buildgw/runners/kaniko/sandboxinit"
	"github.com/buildgw/buildgw/runners/kubernetes/podinit"
)

// kanikoManifestCache is kaniko's cache of remote images by reference
// (pkg/image/remote), consulted before any registry is asked.
//
//go:linkname kanikoManifestCache github.com/GoogleContainerTools/kaniko/pkg/image/remote.manifestCache
var kanikoManifestCache map[string]v1.Image

func main() {
	if podinit.Requested() {
		// The kubernetes runner's Pod: fetch, build in the sandbox (this
		// binary again, below), send the image back.
		os.Exit(podinit.Run(os.Args[1:]))
	}
	run, err := sandboxinit.Enter()
	if err != nil {
		fmt.Fprintf(os.Stderr, "buildgw sandbox: %v\n", err)
		os.Exit(125)
	}
	if !run {
		return
	}
	if sandboxinit.Sealed() {
		// Base images come from what the gateway fetched, never from a
		// registry: the sandbox has neither the network nor the
		// credentials for one.
		image.RetrieveRemoteImage = func(ref string, _ config.RegistryOptions, _ string) (v1.Image, error) {
			return sandboxinit.RetrieveImage(ref)
		}
		// COPY --from=IMAGE fetches through kaniko's remote package
		// directly, which looks in its manifest cache first: the
		// handed-in images go there, under every spelling.
		imgs, err := sandboxinit.Images()
		if err != nil {
			fmt.Fprintf(os.Stderr, "buildgw sandbox: %v\n", err)
			os.Exit(125)
		}
		for ref, img := range imgs {
			kanikoManifestCache[ref] = img
		}
	}
	if err := cmd.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}

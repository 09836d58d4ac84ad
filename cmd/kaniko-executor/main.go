// Command kaniko-executor is kaniko's executor, built from the version pinned
// in this module's go.mod so that go.sum fixes exactly what runs in the
// build sandbox. Before kaniko starts it sets up the job's root (see
// runners/kaniko/sandbox); the rootless kaniko runner starts it inside fresh
// user, mount and pid namespaces.
package main

import (
	"fmt"
	"os"

	"github.com/GoogleContainerTools/kaniko/cmd/executor/cmd"

	"github.com/buildgw/buildgw/runners/kaniko/sandbox"
)

func main() {
	run, err := sandbox.Enter()
	if err != nil {
		fmt.Fprintf(os.Stderr, "buildgw sandbox: %v\n", err)
		os.Exit(125)
	}
	if !run {
		return
	}
	if err := cmd.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}

// Command buildctl-lite submits builds to a buildgw gateway and follows
// them.
package main

//go:generate go run ./help --dir ../../docs/buildctl-lite

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildgw/buildgw/cmd/buildctl-lite/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.New().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		stop()
		os.Exit(cmd.ExitCode(err))
	}
}

// Command buildgw is the build gateway server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildgw/buildgw/cmd/buildgw/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.New().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

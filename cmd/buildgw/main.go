// Command buildgw is the build gateway server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildgw/buildgw/cmd/buildgw/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first SIGTERM or SIGINT shuts down gracefully; a second one
	// stops at once (sandboxes die with the gateway, and the next start
	// records their builds as interrupted).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		s := <-sigs
		fmt.Fprintf(os.Stderr, "buildgw: second %s: stopping at once\n", s)
		os.Exit(2)
	}()
	if err := cmd.New().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

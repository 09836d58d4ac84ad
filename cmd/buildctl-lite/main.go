// Command buildctl-lite submits builds to a buildgw gateway and follows
// them.
package main

//go:generate go run ./help --dir ../../docs/buildctl-lite

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildgw/buildgw/cmd/buildctl-lite/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := cmd.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Command strata is Strata's command-line client: Docker's image commands
// against the builder, metadata and blobstore services.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/strata-build/strata/cli/internal/command"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command.Execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

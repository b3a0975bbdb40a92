// Command build-push builds a directory as a registry reference and pushes
// it there, receiving the build's events on a channel.
//
//	go run ./examples/build-push DIR HOST:PORT/REPO:TAG
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/strata-build/strata/client"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: build-push DIR HOST:PORT/REPO:TAG")
	}
	dir, ref := os.Args[1], os.Args[2]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := client.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	run := c.StartBuild(ctx, dir, client.BuildOptions{Tags: []string{ref}})
	for ev := range run.Events() {
		switch {
		case ev.GetStarted() != nil:
			fmt.Printf("step %d: %s\n", ev.GetStep(), ev.GetStarted().GetInstruction())
		case ev.GetCached() != nil:
			fmt.Printf("step %d: cached\n", ev.GetStep())
		}
	}
	res, err := run.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("built", res.GetImageId())

	// Localhost registries are plain HTTP; others use TLS unless Insecure.
	pushed, err := c.Push(ctx, ref, client.PushOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("pushed %s: digest: %s size: %d\n", ref, pushed.GetManifestDigest(), pushed.GetManifestSize())
}

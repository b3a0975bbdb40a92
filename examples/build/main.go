// Command build builds a directory, streams its progress and tags the
// result: go run ./examples/build DIR NAME[:TAG]
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/strata-build/strata/client"
)

func main() {
	ctx := context.Background()
	c, err := client.New(ctx) // STRATA_BUILDER_ADDR …, else localhost:50051 …
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Build(ctx, os.Args[1], client.BuildOptions{
		OnEvent: func(ev *client.BuildEvent) {
			if s := ev.GetStarted(); s != nil {
				fmt.Printf("Step %d/%d : %s\n", ev.GetStep(), s.GetTotalSteps(), s.GetInstruction())
			}
			os.Stdout.Write(ev.GetOutput().GetData())
		},
	})
	if err != nil {
		log.Fatal(err) // a *client.BuildError names the Dockerfile's line
	}
	if err := c.Tag(ctx, res.GetImageId(), os.Args[2]); err != nil {
		log.Fatal(err)
	}
	fmt.Println("built", res.GetImageId(), "as", os.Args[2])
}

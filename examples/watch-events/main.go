// Command watch-events prints the metadata service's events (tag, untag,
// delete, push, …) as they happen, after replaying those since a time.
//
//	go run ./examples/watch-events [-since 1h] [-n COUNT]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/strata-build/strata/client"
)

// errEnough ends the watch after -n events.
var errEnough = errors.New("enough events")

func main() {
	since := flag.Duration("since", 0, "replay the events of this long ago first")
	count := flag.Int("n", 0, "stop after this many events (0: never)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := client.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var opts client.WatchOptions
	if *since > 0 {
		opts.Since = time.Now().Add(-*since)
	}
	seen := 0
	err = c.WatchEvents(ctx, opts, func(ev *client.Event) error {
		fmt.Printf("%s %s %s %s\n", ev.GetTime().AsTime().Format(time.RFC3339), ev.GetAction(), ev.GetReference(), ev.GetImageId())
		if seen++; *count > 0 && seen >= *count {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) && ctx.Err() == nil {
		log.Fatal(err)
	}
}

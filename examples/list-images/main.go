// Command list-images lists the images the metadata service holds, as
// `strata images` does, with their tags and sizes.
//
//	go run ./examples/list-images [-a]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/strata-build/strata/client"
)

func main() {
	all := flag.Bool("a", false, "include intermediate images")
	flag.Parse()
	ctx := context.Background()
	c, err := client.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	images, err := c.Images(ctx, client.ListOptions{All: *all})
	if err != nil {
		log.Fatal(err)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTAGS\tSIZE")
	for _, img := range images {
		id := strings.TrimPrefix(img.GetId(), "sha256:")[:12]
		fmt.Fprintf(w, "%s\t%s\t%d\n", id, strings.Join(img.GetRepoTags(), ","), img.GetSize())
	}
	w.Flush()
}

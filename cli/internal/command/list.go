package command

import (
	"github.com/spf13/cobra"

	"github.com/strata-build/strata/cli/internal/formatter"
	"github.com/strata-build/strata/client"
)

func newListCommand(c *CLI) *cobra.Command {
	var (
		quiet, all, noTrunc, digests bool
		format                       string
		filters                      filterFlag
	)
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS] [REPOSITORY[:TAG]]",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    maxArgs(1),
		Example: "  strata image ls\n" +
			"  strata image ls my-nginx\n" +
			"  strata image ls --digests --no-trunc\n" +
			"  strata image ls --filter dangling=true -q\n" +
			"  strata image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}'",
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := client.ListOptions{All: all, Filters: filters.filters}
			if len(args) > 0 {
				opts.Filters = append(opts.Filters, &client.Filter{Key: "reference", Value: args[0]})
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			list, err := cl.Images(cmd.Context(), opts)
			if err != nil {
				return err
			}
			ctx := c.formatContext(formatter.NewImageFormat(format, quiet, digests), !noTrunc)
			return formatter.WriteImages(ctx, list, digests)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&quiet, "quiet", "q", false, "Only show image IDs")
	f.BoolVarP(&all, "all", "a", false, "Show all images (default hides intermediate images)")
	f.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	f.BoolVar(&digests, "digests", false, "Show digests")
	f.StringVar(&format, "format", "", formatHelp)
	f.VarP(&filters, "filter", "f", "Filter output based on conditions provided")
	return cmd
}

package command

import (
	"github.com/spf13/cobra"

	"github.com/strata-build/strata/cli/internal/formatter"
)

func newHistoryCommand(c *CLI) *cobra.Command {
	var (
		human, quiet, noTrunc bool
		format                string
	)
	cmd := &cobra.Command{
		Use:   "history [OPTIONS] IMAGE",
		Short: "Show the history of an image",
		Args:  exactArgs(1),
		Example: "  strata image history my-nginx\n" +
			"  strata image history --no-trunc -H=false my-nginx\n" +
			"  strata image history --format '{{.ID}}: {{.CreatedBy}}' my-nginx",
		ValidArgsFunction: c.completeImageNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			rows, err := cl.History(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ctx := c.formatContext(formatter.NewHistoryFormat(format, quiet, human), !noTrunc)
			return formatter.WriteHistory(ctx, rows, human)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&human, "human", "H", true, "Print sizes and dates in human readable format")
	f.BoolVarP(&quiet, "quiet", "q", false, "Only show image IDs")
	f.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	f.StringVar(&format, "format", "", formatHelp)
	return cmd
}

// formatHelp is Docker's help text for --format.
const formatHelp = `Format output using a custom template:
'table':            Print output in table format with column headers (default)
'table TEMPLATE':   Print output in table format using the given Go template
'json':             Print in JSON format
'TEMPLATE':         Print output using the given Go template.
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates`

// formatContext is where and how a command renders.
func (c *CLI) formatContext(format formatter.Format, trunc bool) formatter.Context {
	return formatter.Context{Output: c.Out, Format: format, Trunc: trunc, Now: c.Now}
}

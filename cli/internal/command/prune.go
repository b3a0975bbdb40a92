package command

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"
)

const (
	pruneAllWarning = `WARNING! This will remove all images without at least one container associated to them.
Are you sure you want to continue?`
	pruneDanglingWarning = `WARNING! This will remove all dangling images.
Are you sure you want to continue?`
)

func newPruneCommand(c *CLI) *cobra.Command {
	var (
		force, all bool
		filters    filterFlag
	)
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove unused images",
		Args:  noArgs,
		Example: "  strata image prune\n" +
			"  strata image prune -a -f\n" +
			"  strata image prune -f --filter until=24h --filter label=stage=ci",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				warning := pruneDanglingWarning
				if all {
					warning = pruneAllWarning
				}
				ok, err := confirm(cmd.Context(), c.In, c.Out, warning)
				if err != nil || !ok {
					return err
				}
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			report, err := cl.Prune(cmd.Context(), client.PruneOptions{All: all, Filters: filters.filters})
			if err != nil {
				return err
			}
			if len(report.Items) > 0 {
				fmt.Fprintln(c.Out, "Deleted Images:")
				printDeleted(c, report.Items, "untagged: ", "deleted: ")
				fmt.Fprintln(c.Out)
			}
			fmt.Fprintln(c.Out, "Total reclaimed space:", units.HumanSize(float64(report.SpaceReclaimed)))
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	f.BoolVarP(&all, "all", "a", false, "Remove all unused images, not just dangling ones")
	f.Var(&filters, "filter", `Provide filter values (e.g. "until=<timestamp>")`)
	return cmd
}

// confirm asks a yes/no question as Docker does ("[y/N]", no by default).
// Ctrl-C while waiting answers no.
func confirm(ctx context.Context, in io.Reader, out io.Writer, question string) (bool, error) {
	fmt.Fprint(out, question+" [y/N] ")
	answer := make(chan bool, 1)
	go func() {
		scanner := bufio.NewScanner(in)
		answer <- scanner.Scan() && strings.EqualFold(strings.TrimSpace(scanner.Text()), "y")
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(out)
		return false, ctx.Err()
	case ok := <-answer:
		return ok, nil
	}
}

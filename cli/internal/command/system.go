package command

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/cli/internal/formatter"
	"github.com/strata-build/strata/client"
)

func newSystemCommand(c *CLI) *cobra.Command {
	system := &cobra.Command{
		Use:     "system",
		Short:   "Manage Strata",
		Args:    noArgs,
		Example: "  strata system df",
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var format string
	df := &cobra.Command{
		Use:   "df [OPTIONS]",
		Short: "Show disk usage",
		Args:  noArgs,
		Example: "  strata system df\n" +
			"  strata system df --format json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			resp, err := cl.DiskUsage(cmd.Context())
			if err != nil {
				return err
			}
			return formatter.WriteDiskUsage(c.formatContext(formatter.NewDiskUsageFormat(format), true), resp)
		},
	}
	df.Flags().StringVar(&format, "format", "", formatHelp)
	system.AddCommand(df)
	return system
}

func isNotFound(err error) bool { return errors.Is(err, client.ErrNotFound) }

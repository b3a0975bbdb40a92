package command

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"
)

// newBuilderCommand is `strata builder`: the builder's own storage, as
// `docker builder` and `docker buildx du` manage BuildKit's. What it holds
// are the RUN --mount=type=cache directories.
func newBuilderCommand(c *CLI) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "builder",
		Short: "Manage the builder's cache mounts",
		Args:  noArgs,
		Example: "  strata builder du\n" +
			"  strata builder prune -f --filter until=24h",
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBuilderDuCommand(c), newBuilderPruneCommand(c))
	return cmd
}

func newBuilderDuCommand(c *CLI) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "du [OPTIONS]",
		Short: "Show the disk usage of the builder's cache mounts",
		Args:  noArgs,
		Example: "  strata builder du\n" +
			"  strata builder du --verbose",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			usage, err := cl.CacheMounts(cmd.Context())
			if err != nil {
				return err
			}
			now := c.now()
			w := tabwriter.NewWriter(c.Out, 1, 8, 1, '\t', 0)
			if verbose {
				writeCacheMountsVerbose(w, usage.Mounts, now)
			} else if len(usage.Mounts) > 0 {
				writeCacheMountsTable(w, usage.Mounts, now)
				fmt.Fprintln(w)
			}
			var reclaimable int64
			for _, m := range usage.Mounts {
				if !m.GetInUse() {
					reclaimable += m.GetSize()
				}
			}
			fmt.Fprintf(w, "Reclaimable:\t%s\n", units.HumanSize(float64(reclaimable)))
			fmt.Fprintf(w, "Total:\t%s\n", units.HumanSize(float64(usage.TotalSize)))
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&verbose, "verbose", false, "Provide a more verbose output")
	return cmd
}

const builderPruneWarning = `WARNING! This will remove the builder's cache mounts that no build is using.
Are you sure you want to continue?`

func newBuilderPruneCommand(c *CLI) *cobra.Command {
	var (
		force, all, verbose bool
		filters             []string
		keepStorage         string
	)
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove the builder's cache mounts",
		Long: "Remove the builder's RUN --mount=type=cache directories that no running step uses:\n" +
			"all of them, or those the filters choose (until=DURATION: not used for that long; id=ID).\n" +
			"--keep-storage stops once the cache mounts hold at most that much, least recently used removed first.",
		Args: noArgs,
		Example: "  strata builder prune\n" +
			"  strata builder prune -f --filter until=24h\n" +
			"  strata builder prune -f --keep-storage 5GB",
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := cacheMountsPruneOptions(filters, keepStorage)
			if err != nil {
				return statusError{code: 125, msg: err.Error()}
			}
			if !force {
				ok, err := confirm(cmd.Context(), c.In, c.Out, builderPruneWarning)
				if err != nil || !ok {
					return err
				}
			}
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			report, err := cl.PruneCacheMounts(cmd.Context(), opts)
			if err != nil {
				return err
			}
			now := c.now()
			w := tabwriter.NewWriter(c.Out, 1, 8, 1, '\t', 0)
			if verbose {
				writeCacheMountsVerbose(w, report.Removed, now)
			} else if len(report.Removed) > 0 {
				writeCacheMountsTable(w, report.Removed, now)
			}
			fmt.Fprintf(w, "Total:\t%s\n", units.HumanSize(float64(report.SpaceReclaimed)))
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&all, "all", "a", false, "Remove all unused build cache, not just dangling ones (cache mounts are never dangling: the same as without)")
	f.BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	f.StringArrayVar(&filters, "filter", nil, `Provide filter values (e.g. "until=24h", "id=gomod")`)
	f.StringVar(&keepStorage, "keep-storage", "", `Amount of disk space to keep for cache mounts (e.g. "5GB")`)
	f.BoolVar(&verbose, "verbose", false, "Provide a more verbose output")
	return cmd
}

// cacheMountsPruneOptions reads prune's --filter and --keep-storage.
func cacheMountsPruneOptions(filters []string, keepStorage string) (client.PruneCacheMountsOptions, error) {
	var opts client.PruneCacheMountsOptions
	for _, f := range filters {
		key, val, ok := strings.Cut(f, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		val = strings.TrimSpace(val)
		if !ok || key == "" {
			return opts, fmt.Errorf("bad format of filter (expected name=value)")
		}
		switch key {
		case "until":
			d, err := time.ParseDuration(val)
			if err != nil || d < 0 {
				return opts, fmt.Errorf("invalid filter 'until=%s': want a duration such as 24h", val)
			}
			opts.UnusedFor = d
		case "id":
			opts.IDs = append(opts.IDs, val)
		default:
			return opts, fmt.Errorf("invalid filter '%s'", key)
		}
	}
	if keepStorage != "" {
		n, err := units.RAMInBytes(keepStorage)
		if err != nil || n < 0 {
			return opts, fmt.Errorf("invalid argument %q for \"--keep-storage\" flag: want a size such as 5GB", keepStorage)
		}
		opts.KeepBytes = n
	}
	return opts, nil
}

// writeCacheMountsTable writes buildx du's table.
func writeCacheMountsTable(w io.Writer, mounts []*client.CacheMount, now time.Time) {
	fmt.Fprintln(w, "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED")
	for _, m := range mounts {
		fmt.Fprintf(w, "%s\t%t\t%s\t%s\n", m.GetId(), !m.GetInUse(), units.HumanSize(float64(m.GetSize())), lastAccessed(m, now))
	}
}

// writeCacheMountsVerbose writes buildx du --verbose's records.
func writeCacheMountsVerbose(w io.Writer, mounts []*client.CacheMount, now time.Time) {
	for _, m := range mounts {
		fmt.Fprintf(w, "ID:\t%s\n", m.GetId())
		if m.GetSource() != "" {
			fmt.Fprintf(w, "Source:\t%s\n", m.GetSource())
		}
		fmt.Fprintf(w, "Reclaimable:\t%t\n", !m.GetInUse())
		fmt.Fprintf(w, "In use:\t%t\n", m.GetInUse())
		fmt.Fprintf(w, "Size:\t%s\n", units.HumanSize(float64(m.GetSize())))
		fmt.Fprintf(w, "Last used:\t%s\n", lastAccessed(m, now))
		fmt.Fprintf(w, "Type:\texec.cachemount\n\n")
	}
}

func lastAccessed(m *client.CacheMount, now time.Time) string {
	if m.GetLastUsed() == nil {
		return ""
	}
	return units.HumanDuration(now.Sub(m.GetLastUsed().AsTime())) + " ago"
}

// now is the time ages are shown against.
func (c *CLI) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

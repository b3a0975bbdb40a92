package command

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/strata-build/strata/client"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// newBuildsCommand is `strata builds`: the builder's builds as resources.
func newBuildsCommand(c *CLI) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "builds",
		Short: "List, inspect, follow and cancel the builder's builds",
		Example: "  strata builds ls\n" +
			"  strata builds logs -f 3f2a9c0e41d7b6a85c2e1f09\n" +
			"  strata builds cancel 3f2a9c0e41d7b6a85c2e1f09",
	}
	cmd.AddCommand(newBuildsListCommand(c), newBuildsInspectCommand(c), newBuildsLogsCommand(c), newBuildsCancelCommand(c))
	return cmd
}

func newBuildsListCommand(c *CLI) *cobra.Command {
	var active, mine, quiet, noTrunc bool
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List the running and recent builds",
		Example: "  strata builds ls\n  strata builds ls --active --mine\n  strata builds ls -q",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			list, err := cl.ListBuilds(cmd.Context(), client.ListBuildsOptions{ActiveOnly: active, Mine: mine})
			if err != nil {
				return err
			}
			if quiet {
				for _, b := range list {
					fmt.Fprintln(c.Out, b.GetId())
				}
				return nil
			}
			now := time.Now()
			if c.Now != nil {
				now = c.Now()
			}
			w := tabwriter.NewWriter(c.Out, 0, 0, 3, ' ', 0)
			fmt.Fprintln(w, "BUILD ID\tSTATE\tSTEP\tCACHED\tCREATED\tDURATION\tREQUESTER\tTAGS")
			for _, b := range list {
				id := b.GetId()
				if !noTrunc && len(id) > 12 {
					id = id[:12]
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s ago\t%s\t%s\t%s\n", id, buildState(b), buildStep(b), b.GetCacheHits(),
					units.HumanDuration(now.Sub(b.GetCreated().AsTime())), buildDuration(b, now), b.GetRequester(), strings.Join(b.GetTags(), ","))
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&active, "active", "a", false, "Only show queued and running builds")
	f.BoolVar(&mine, "mine", false, "Only show my builds")
	f.BoolVarP(&quiet, "quiet", "q", false, "Only show build IDs")
	f.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	return cmd
}

// buildState is a build's state in lower case, with its place in the queue.
func buildState(b *builderv1.Build) string {
	s := strings.ToLower(strings.TrimPrefix(b.GetState().String(), "BUILD_STATE_"))
	if b.GetState() == builderv1.BuildState_BUILD_STATE_QUEUED {
		s += fmt.Sprintf(" (%d ahead)", b.GetQueueAhead())
	}
	return s
}

func buildStep(b *builderv1.Build) string {
	if b.GetTotalSteps() == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", b.GetCurrentStep(), b.GetTotalSteps())
}

func buildDuration(b *builderv1.Build, now time.Time) string {
	if b.GetStarted() == nil {
		return "-"
	}
	end := now
	if b.GetEnded() != nil {
		end = b.GetEnded().AsTime()
	}
	return end.Sub(b.GetStarted().AsTime()).Round(100 * time.Millisecond).String()
}

func newBuildsInspectCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:     "inspect BUILD",
		Short:   "Show a build as JSON",
		Example: "  strata builds inspect 3f2a9c0e41d7b6a85c2e1f09",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			info, err := cl.GetBuild(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "    ", EmitUnpopulated: true}.Marshal(info)
			if err != nil {
				return err
			}
			var v any // through encoding/json for a stable layout
			if err := json.Unmarshal(b, &v); err != nil {
				return err
			}
			out, _ := json.MarshalIndent([]any{v}, "", "    ")
			fmt.Fprintln(c.Out, string(out))
			return nil
		},
	}
}

func newBuildsLogsCommand(c *CLI) *cobra.Command {
	var since int64
	cmd := &cobra.Command{
		Use:     "logs [OPTIONS] BUILD",
		Short:   "Print a build's progress from the start, following it until it ends",
		Example: "  strata builds logs 3f2a9c0e41d7b6a85c2e1f09\n  strata builds logs --since 12 3f2a9c0e41d7b6a85c2e1f09",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			p := &classicPrinter{out: c.Out}
			res, err := cl.WatchBuild(cmd.Context(), args[0], since, p.event)
			if err != nil {
				return err
			}
			p.result(res)
			return nil
		},
	}
	cmd.Flags().Int64Var(&since, "since", 0, "Print only the events after this sequence number")
	return cmd
}

func newBuildsCancelCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:     "cancel BUILD [BUILD...]",
		Short:   "Cancel builds: their RUN steps are killed and nothing is recorded",
		Example: "  strata builds cancel 3f2a9c0e41d7b6a85c2e1f09",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := cl.CancelBuild(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintln(c.Out, id)
			}
			return nil
		},
	}
}

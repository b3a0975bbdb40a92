package command

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

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
			builder, err := c.builder()
			if err != nil {
				return err
			}
			resp, err := builder.ListBuilds(cmd.Context(), &builderv1.ListBuildsRequest{ActiveOnly: active, Mine: mine})
			if err != nil {
				return err
			}
			if quiet {
				for _, b := range resp.GetBuilds() {
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
			for _, b := range resp.GetBuilds() {
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
			builder, err := c.builder()
			if err != nil {
				return err
			}
			resp, err := builder.GetBuild(cmd.Context(), &builderv1.GetBuildRequest{BuildId: args[0]})
			if err != nil {
				return err
			}
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "    ", EmitUnpopulated: true}.Marshal(resp.GetBuild())
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
			builder, err := c.builder()
			if err != nil {
				return err
			}
			p := &classicPrinter{out: c.Out}
			res, err := watchBuild(cmd.Context(), builder, args[0], since, p.event)
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
			builder, err := c.builder()
			if err != nil {
				return err
			}
			for _, id := range args {
				if _, err := builder.CancelBuild(cmd.Context(), &builderv1.CancelBuildRequest{BuildId: id}); err != nil {
					return err
				}
				fmt.Fprintln(c.Out, id)
			}
			return nil
		},
	}
}

// watchBuild streams a build's events after sequence from to event and
// returns its result.
func watchBuild(ctx context.Context, builder builderv1.BuildServiceClient, id string, from int64, event func(*builderv1.BuildEvent)) (*builderv1.BuildResult, error) {
	w, err := builder.WatchBuild(ctx, &builderv1.WatchBuildRequest{BuildId: id, FromSequence: from})
	if err != nil {
		return nil, err
	}
	return readWatch(w, event)
}

// readWatch reads a WatchBuild stream to the build's result or error.
func readWatch(w grpc.ServerStreamingClient[builderv1.WatchBuildResponse], event func(*builderv1.BuildEvent)) (*builderv1.BuildResult, error) {
	for {
		resp, err := w.Recv()
		if err != nil {
			return nil, err
		}
		if r := resp.GetResult(); r != nil {
			return r, nil
		}
		event(resp.GetEvent())
	}
}

// buildFollower follows a build that `strata build` started: it learns
// the build's ID and the last event seen, so that after a transient
// disconnect it reattaches (WatchBuild) where it left off, and so that an
// interrupt cancels the build (which, once its context is in, would
// otherwise outlive its stream for the builder's detached grace).
type buildFollower struct {
	event func(*builderv1.BuildEvent)
	id    string
	seen  int64
}

// track is the Handler's Event: it notes the ID and sequence, then shows ev.
func (f *buildFollower) track(ev *builderv1.BuildEvent) {
	if a := ev.GetAccepted(); a != nil {
		f.id = a.GetBuildId()
	}
	if ev.GetSequence() > 0 {
		if ev.GetSequence() <= f.seen {
			return // seen before a reattach
		}
		f.seen = ev.GetSequence()
	}
	f.event(ev)
}

// reattachFor is how long a build stays reattachable: the builder's
// default detached grace.
const reattachFor = 60 * time.Second

// recover handles the error that ended the build stream: an interrupt
// cancels the build; a lost connection reattaches until the build ends or
// the grace passes; anything else is the build's own error.
func (f *buildFollower) recover(ctx context.Context, builder builderv1.BuildServiceClient, err error) (*builderv1.BuildResult, error) {
	if f.id == "" {
		return nil, err
	}
	if ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		builder.CancelBuild(cctx, &builderv1.CancelBuildRequest{BuildId: f.id})
		return nil, err
	}
	deadline := time.Now().Add(reattachFor)
	for status.Code(err) == codes.Unavailable && time.Now().Before(deadline) {
		// The call waits for the connection to come back (the build's
		// grace runs meanwhile), but only until the deadline: once the
		// stream is open, it lasts as long as the build.
		wctx, cancel := context.WithCancel(ctx)
		giveUp := time.AfterFunc(time.Until(deadline), cancel)
		var res *builderv1.BuildResult
		w, werr := builder.WatchBuild(wctx, &builderv1.WatchBuildRequest{BuildId: f.id, FromSequence: f.seen}, grpc.WaitForReady(true))
		giveUp.Stop()
		if err = werr; err == nil {
			res, err = readWatch(w, f.track)
		}
		cancel()
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return f.recover(ctx, builder, ctx.Err())
		}
		if status.Code(err) == codes.Canceled && time.Now().After(deadline) {
			err = status.Error(codes.Unavailable, "the builder did not come back within the build's grace")
		}
		select {
		case <-ctx.Done():
			return f.recover(ctx, builder, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if ctx.Err() != nil {
		return f.recover(ctx, builder, err)
	}
	return nil, err
}

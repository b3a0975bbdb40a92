package client

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// The builder keeps its builds as resources: running ones, and recent
// ones for a while after they end.
type (
	// BuildInfo is one build as the builder reports it: ID, state, step,
	// tags, requester, times, result or error.
	BuildInfo  = builderv1.Build
	BuildState = builderv1.BuildState
)

// ListBuildsOptions filter ListBuilds.
type ListBuildsOptions struct {
	// ActiveOnly lists the queued and running builds only.
	ActiveOnly bool
	// Mine lists the caller's builds only.
	Mine bool
}

// ListBuilds lists the builder's running and recent builds.
func (c *Client) ListBuilds(ctx context.Context, opts ListBuildsOptions) ([]*BuildInfo, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	resp, err := builder.ListBuilds(ctx, &builderv1.ListBuildsRequest{ActiveOnly: opts.ActiveOnly, Mine: opts.Mine})
	if err != nil {
		return nil, err
	}
	return resp.GetBuilds(), nil
}

// GetBuild returns the build id; an unknown one is ErrNotFound.
func (c *Client) GetBuild(ctx context.Context, id string) (*BuildInfo, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	resp, err := builder.GetBuild(ctx, &builderv1.GetBuildRequest{BuildId: id})
	if err != nil {
		return nil, err
	}
	return resp.GetBuild(), nil
}

// WatchBuild follows the build id: it passes onEvent (which may be nil)
// the build's events after sequence number from (0: all of them, from
// the start), and returns the result once the build ends, or its error
// (a *BuildError for a Dockerfile error or a failed RUN step).
func (c *Client) WatchBuild(ctx context.Context, id string, from int64, onEvent func(*BuildEvent)) (*BuildResult, error) {
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	w, err := builder.WatchBuild(ctx, &builderv1.WatchBuildRequest{BuildId: id, FromSequence: from})
	if err != nil {
		return nil, err
	}
	res, err := readWatch(w, func(ev *BuildEvent) {
		if onEvent != nil {
			onEvent(ev)
		}
	})
	return res, asBuildError(err)
}

// CancelBuild cancels the build id: its RUN steps are killed and nothing
// is recorded. A build that already ended is ErrFailedPrecondition
// (reason BUILD_ENDED).
func (c *Client) CancelBuild(ctx context.Context, id string) error {
	builder, err := c.builder()
	if err != nil {
		return err
	}
	_, err = builder.CancelBuild(ctx, &builderv1.CancelBuildRequest{BuildId: id})
	return err
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

// buildFollower follows a build that Build started: it learns the build's
// ID (from its BuildAccepted event) and the last event seen, so that after
// a transient disconnect it reattaches (WatchBuild) where it left off, and
// so that a canceled context cancels the build (which, once its context
// is in, would otherwise outlive its stream for the builder's detached
// grace).
type buildFollower struct {
	event func(*builderv1.BuildEvent) // may be nil
	id    string
	seen  int64
}

// track is the Handler's Event: it notes the ID and sequence, then passes
// ev on.
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
	if f.event != nil {
		f.event(ev)
	}
}

// reattachFor is how long a build stays reattachable: the builder's
// default detached grace.
const reattachFor = 60 * time.Second

// isCode reports whether err is a gRPC error of code c, as a status or as
// the errdefs error the client's interceptors make of it.
func isCode(err error, c codes.Code) bool {
	if status.Code(err) == c {
		return true
	}
	switch c {
	case codes.Unavailable:
		return errdefs.IsUnavailable(err)
	case codes.Canceled:
		return errdefs.KindOf(err) == errdefs.ErrCanceled
	}
	return false
}

// recover handles the error that ended the build stream: a canceled ctx
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
	for isCode(err, codes.Unavailable) && time.Now().Before(deadline) {
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
		if isCode(err, codes.NotFound) {
			// The builder that ran it is gone (killed, or restarted) and
			// the one reached now never had it: the build's work is lost,
			// which is the unavailability the caller retries, not a
			// missing resource.
			return nil, errdefs.Unavailable("build %s: the builder running it is unavailable and no builder reached has it (%v): its work is lost; build again", f.id, status.Convert(err).Message())
		}
		if isCode(err, codes.Canceled) && time.Now().After(deadline) {
			err = errdefs.Unavailable("the builder did not come back within the build's grace")
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

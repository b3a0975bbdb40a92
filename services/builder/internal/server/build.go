package server

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/build"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
)

// Builds serves Build RPCs: buildctx receives the context, build runs the
// build.
type Builds struct {
	builder  *build.Builder
	contexts *buildctx.Receiver
	stopping context.Context

	mu       sync.Mutex
	draining bool
	running  int
	// idle is closed when the last running build ends during a drain.
	idle chan struct{}
}

// NewBuilds returns the Builds that receives contexts with contexts and
// builds with b. When stopping ends (the builder is told to stop), every
// running build is canceled: its steps are killed and its temporary state
// removed while the server drains.
func NewBuilds(stopping context.Context, b *build.Builder, contexts *buildctx.Receiver) *Builds {
	return &Builds{builder: b, contexts: contexts, stopping: stopping}
}

// Drain refuses new builds (UNAVAILABLE, reason BUILDER_DRAINING: the
// client retries on another replica) and waits until the running ones
// have ended, or ctx has. It is for a rolling restart: the caller stops
// the builder after it, which cancels what still runs.
func (b *Builds) Drain(ctx context.Context) error {
	b.mu.Lock()
	b.draining = true
	if b.running == 0 {
		b.mu.Unlock()
		return nil
	}
	if b.idle == nil {
		b.idle = make(chan struct{})
	}
	idle := b.idle
	b.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// begin counts a new build in, unless the builder drains.
func (b *Builds) begin() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.draining {
		return errdefs.Unavailable("this builder is shutting down and takes no new builds: try again (another replica will take it)").
			WithReason("BUILDER_DRAINING")
	}
	b.running++
	return nil
}

func (b *Builds) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.running--
	if b.running == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
}

// Build runs one build over the stream. Closing the stream (or the client
// going away) cancels the build, which kills its RUN processes and removes
// its temporary state.
func (s *Server) Build(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]) error {
	if err := s.builds.begin(); err != nil {
		return err
	}
	defer s.builds.end()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.builds.stopping, cancel)()
	start := time.Now()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return errdefs.InvalidArgument("build: the first message must carry the options")
	}
	sess, err := s.builds.contexts.Receive(ctx, stream, opts, cancel)
	if err != nil {
		return err
	}
	defer sess.Close()
	events := &eventSender{stream: stream, cancel: cancel}
	res, err := s.builds.builder.Build(ctx, buildRequest(opts, sess), events.send)
	if err == nil {
		// A build that needed no context contents still ends only once
		// they all came: the client sends them before it reads the result.
		err = sess.Contents(ctx)
	}
	if err != nil {
		return buildError(err, sess, ctx, stream.Context())
	}
	return events.result(&builderv1.BuildResult{
		ImageId:              res.ImageID,
		ManifestDigest:       res.ManifestDigest,
		Tags:                 res.Tags,
		ContextBytesReceived: sess.Received(),
		Duration:             durationpb.New(time.Since(start)),
	})
}

// buildRequest converts a build's options and its context.
func buildRequest(opts *builderv1.BuildOptions, sess *buildctx.Session) *build.Request {
	args := map[string]string{}
	for k, v := range opts.GetBuildArgs() {
		args[k] = v
	}
	return &build.Request{
		Dockerfile:      sess.Dockerfile,
		Context:         sess.Context,
		ContextContents: sess.Contents,
		BuildArgs:       args,
		Target:          opts.GetTarget(),
		Labels:          opts.GetLabels(),
		NoCache:         opts.GetNoCache(),
		Network:         opts.GetNetwork(),
		Resources:       opts.GetResources(),
		Tags:            opts.GetTags(),
	}
}

// buildError is the error a failed build ends its RPC with: the context
// transfer's when the context did not come, a cancellation when the client
// went away (ctx is the build's, rpc the stream's), and the build's
// otherwise.
func buildError(err error, sess *buildctx.Session, ctx, rpc context.Context) error {
	if xerr := sess.Err(); xerr != nil {
		return xerr
	}
	if ctx.Err() != nil && rpc.Err() != nil {
		return errdefs.New(errdefs.ErrCanceled, "build canceled: %v", rpc.Err())
	}
	if errdefs.IsUnavailable(err) {
		// A service the build needs went away (the blob store, the
		// metadata service, a registry): the error names it.
		return errdefs.New(errdefs.ErrUnavailable, "build failed: %w", err)
	}
	return err
}

// eventSender sends a build's events and result. Events come from the
// build's goroutine and from RUN output copiers; a stream allows one sender
// at a time. A failed send cancels the build.
type eventSender struct {
	stream interface {
		Send(*builderv1.BuildResponse) error
	}
	cancel func()

	mu  sync.Mutex
	err error
}

func (e *eventSender) send(ev *builderv1.BuildEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return
	}
	if e.err = e.stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: ev}}); e.err != nil {
		e.cancel()
	}
}

// result sends the result, or returns the error an event's send failed with.
func (e *eventSender) result(r *builderv1.BuildResult) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	return e.stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Result{Result: r}})
}

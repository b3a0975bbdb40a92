package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/build"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/builds"
)

// Builds serves Build RPCs: buildctx receives the context, build runs the
// build, builds keeps it as a resource.
type Builds struct {
	builder  *build.Builder
	contexts *buildctx.Receiver
	registry *builds.Registry
	record   func(context.Context, *metadatav1.Event)
	stopping context.Context

	mu       sync.Mutex
	draining bool
	running  int
	// idle is closed when the last running build ends during a drain.
	idle chan struct{}
}

// NewBuilds returns the Builds that receives contexts with contexts,
// builds with b and keeps the builds in registry. When stopping ends (the
// builder is told to stop), every running build is canceled: its steps
// are killed and its temporary state removed while the server drains.
//
// record records a build's start and end for the metadata event stream
// (best effort: it reports its own failures); nil records nothing.
func NewBuilds(stopping context.Context, b *build.Builder, contexts *buildctx.Receiver, registry *builds.Registry, record func(context.Context, *metadatav1.Event)) *Builds {
	if record == nil {
		record = func(context.Context, *metadatav1.Event) {}
	}
	return &Builds{builder: b, contexts: contexts, registry: registry, record: record, stopping: stopping}
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

// Causes of a build's cancellation besides the registry's.
var (
	errStopping   = errors.New("the builder is stopping")
	errClientGone = errors.New("the client went away before the context was received")
	errNoContext  = errors.New("the context transfer failed")
)

// Build starts a build and streams its events. The build runs apart from
// the stream: once its context is in, the client going away leaves it
// running for the detached grace (see builds.Build.Detachable); before,
// it cancels the build.
func (s *Server) Build(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return errdefs.InvalidArgument("build: the first message must carry the options")
	}
	if err := checkAgentIDs(opts.GetSshIds()); err != nil {
		return err
	}
	secrets, err := receiveSecrets(stream, opts.GetSecretIds())
	if err != nil {
		return err
	}
	// A drain waits for the build, detached or not: runBuild ends it.
	if err := s.builds.begin(); err != nil {
		return err
	}
	// The build keeps the call's values (identity, request ID for logs)
	// but not its cancellation.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(stream.Context()))
	b := s.builds.registry.Start(opts.GetTags(), requester(stream.Context()), cancel)
	b.Attach(func(ev *builderv1.BuildEvent) error {
		return stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: ev}})
	})
	b.Send(&builderv1.BuildEvent{Event: &builderv1.BuildEvent_Accepted{Accepted: &builderv1.BuildAccepted{BuildId: b.ID()}}})
	agents := newAgentForwarder(opts.GetSshIds(), func(m *builderv1.AgentData) error {
		return b.SendOther(func() error {
			return stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Agent{Agent: m}})
		})
	})
	streamFree := make(chan struct{})
	go s.runBuild(ctx, cancel, b, stream, opts, secrets, agents, streamFree)

	select {
	case <-b.Done():
	case <-stream.Context().Done():
		b.Detach()
		// The handler may return only once nothing uses the stream: no
		// event send in flight, no context transfer reading it.
		b.SendOther(func() error { return nil })
		<-streamFree
		return stream.Context().Err()
	}
	<-streamFree
	res, err := b.Outcome()
	if err != nil {
		return err
	}
	return b.SendOther(func() error {
		return stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Result{Result: res}})
	})
}

// runBuild receives b's context over stream and runs the build. It closes
// streamFree once it no longer reads the stream.
//
// With agents, the stream is read until the client closes its side (once
// told the build is over) or goes away: it carries their answers.
func (s *Server) runBuild(ctx context.Context, cancel context.CancelCauseFunc, b *builds.Build, stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse], opts *builderv1.BuildOptions, secrets map[string][]byte, agents *agentForwarder, streamFree chan<- struct{}) {
	defer wipe(secrets)
	defer s.builds.end()
	defer cancel(nil)
	defer context.AfterFunc(s.builds.stopping, func() { cancel(errStopping) })()
	start := time.Now()
	clientGone := context.AfterFunc(stream.Context(), func() { cancel(errClientGone) })
	sess, err := s.builds.contexts.Receive(ctx, &logStream{stream: stream, build: b, agents: agents}, opts, func() { cancel(errNoContext) })
	clientGone()
	if err != nil {
		if agents != nil {
			agents.stop()
		}
		close(streamFree)
		b.Finish(nil, buildError(err, nil, ctx), ctx.Err() != nil)
		return
	}
	defer sess.Close()
	b.Running()
	s.builds.record(ctx, buildEvent(metadatav1.EventAction_EVENT_ACTION_BUILD_STARTED, b, opts, nil, nil))
	go func() {
		defer close(streamFree)
		// Once every content is in, the build needs its client no more.
		if sess.Contents(context.WithoutCancel(ctx)) == nil {
			b.Detachable()
		}
		if agents != nil {
			agents.receive(stream)
		}
	}()
	req := buildRequest(opts, sess)
	req.Secrets = secrets
	if agents != nil {
		req.Agents = agents
	}
	res, err := s.builds.builder.Build(ctx, req, withText(b.Send))
	if err == nil {
		// A build that needed no context contents still ends only once
		// they all came: the client sends them before it reads the result.
		err = sess.Contents(ctx)
	}
	if agents != nil {
		agents.end()
	}
	if err != nil {
		err = withDockerfileDetails(buildError(err, sess, ctx), dockerfileFile(opts), sess.Dockerfile)
		s.builds.record(ctx, buildEvent(metadatav1.EventAction_EVENT_ACTION_BUILD_FAILED, b, opts, nil, err))
		b.Finish(nil, err, errdefs.KindOf(err) == errdefs.ErrCanceled)
		return
	}
	result := buildResult(res, sess, time.Since(start), b.ID())
	s.builds.record(ctx, buildEvent(metadatav1.EventAction_EVENT_ACTION_BUILD_FINISHED, b, opts, result, nil))
	b.Finish(result, nil, false)
}

// buildResult converts a finished build's result.
func buildResult(res *build.Result, sess *buildctx.Session, took time.Duration, id string) *builderv1.BuildResult {
	return &builderv1.BuildResult{
		ImageId:              res.ImageID,
		ManifestDigest:       res.ManifestDigest,
		Tags:                 res.Tags,
		ContextBytesReceived: sess.Received(),
		Duration:             durationpb.New(took),
		BuildId:              id,
	}
}

// buildEvent is the metadata event of a build's start (res and err nil),
// success (res) or failure (err).
func buildEvent(action metadatav1.EventAction, b *builds.Build, opts *builderv1.BuildOptions, res *builderv1.BuildResult, err error) *metadatav1.Event {
	ev := &metadatav1.Event{Action: action, ImageId: res.GetImageId(), Attributes: map[string]string{"build_id": b.ID()}}
	if tags := opts.GetTags(); len(tags) > 0 {
		ev.Attributes["tags"] = strings.Join(tags, ",")
		ev.Reference = tags[0]
	}
	if err != nil {
		state := "failed"
		if errdefs.KindOf(err) == errdefs.ErrCanceled {
			state = "canceled"
		}
		ev.Attributes["state"] = state
		ev.Attributes["error"] = err.Error()
		var e *errdefs.Error
		if errors.As(err, &e) && e.Reason() != "" {
			ev.Attributes["reason"] = e.Reason()
		}
	}
	return ev
}

// withText gives RUN output lines their text rendering (StepOutput.text)
// when they are valid UTF-8, for clients such as grpcurl that show bytes
// as base64.
func withText(send func(*builderv1.BuildEvent)) func(*builderv1.BuildEvent) {
	return func(ev *builderv1.BuildEvent) {
		if o := ev.GetOutput(); o != nil && o.Text == "" && utf8.Valid(o.GetData()) {
			o.Text = string(o.GetData())
		}
		send(ev)
	}
}

// logStream is the Build stream as the context session uses it: its
// events (queued) go to the build's log, its context requests to the
// client in order with them.
type logStream struct {
	stream buildctx.Stream
	build  *builds.Build
	// agents, when the client forwards SSH agents, takes their answers,
	// which may come while the context does.
	agents *agentForwarder
}

func (l *logStream) Send(m *builderv1.BuildResponse) error {
	if ev := m.GetEvent(); ev != nil {
		l.build.Send(ev)
		return nil
	}
	return l.build.SendOther(func() error { return l.stream.Send(m) })
}

func (l *logStream) Recv() (*builderv1.BuildRequest, error) {
	for {
		m, err := l.stream.Recv()
		if a := m.GetAgent(); err == nil && a != nil && l.agents != nil {
			l.agents.deliver(a)
			continue
		}
		return m, err
	}
}

// requester names the caller of ctx's call, or "" without auth.
func requester(ctx context.Context) string {
	if id, ok := auth.IdentityFrom(ctx); ok {
		return id.Name
	}
	return ""
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
		LiveEvents:      opts.GetEventOrder() == builderv1.EventOrder_EVENT_ORDER_LIVE,
	}
}

// buildError is the error a failed build ends with: the context
// transfer's when the context did not come, a cancellation when the build
// was canceled (by its client, CancelBuild or the detached grace; ctx is
// the build's), and the build's otherwise. sess may be nil.
func buildError(err error, sess *buildctx.Session, ctx context.Context) error {
	if sess != nil {
		if xerr := sess.Err(); xerr != nil {
			return xerr
		}
	}
	if cause := context.Cause(ctx); ctx.Err() != nil && cause != errStopping && cause != errNoContext {
		return errdefs.New(errdefs.ErrCanceled, "build canceled: %v", cause).WithReason("BUILD_CANCELED")
	}
	if errdefs.IsUnavailable(err) {
		// A service the build needs went away (the blob store, the
		// metadata service, a registry): the error names it.
		return errdefs.New(errdefs.ErrUnavailable, "build failed: %w", err)
	}
	return err
}

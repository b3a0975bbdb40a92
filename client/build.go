package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/strata-build/strata/client/buildcontext"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// The builder's messages a caller handles: events as they come, the result
// at the end.
type (
	BuildEvent   = builderv1.BuildEvent
	BuildResult  = builderv1.BuildResult
	RunResources = builderv1.RunResources
	Ulimit       = builderv1.Ulimit
	NetworkMode  = builderv1.NetworkMode
	EventOrder   = builderv1.EventOrder
)

// The orders a build's events come in.
const (
	// EventsSequential sends the events in a sequential build's order, as
	// Docker's classic builder prints them: a stage's wait while an
	// earlier stage runs.
	EventsSequential = builderv1.EventOrder_EVENT_ORDER_UNSPECIFIED
	// EventsLive sends them as they happen, the steps of stages that run
	// at once interleaved (each StepStarted names its stage).
	EventsLive = builderv1.EventOrder_EVENT_ORDER_LIVE
)

// The network modes of RUN steps.
const (
	NetworkDefault = builderv1.NetworkMode_NETWORK_MODE_UNSPECIFIED
	NetworkNone    = builderv1.NetworkMode_NETWORK_MODE_NONE
	NetworkHost    = builderv1.NetworkMode_NETWORK_MODE_HOST
)

// BuildOptions are docker build's options.
type BuildOptions struct {
	// Tags name the result ("app", "app:1.2", "localhost:5000/team/app:1").
	Tags []string
	// Dockerfile is the Dockerfile's path; a relative one is relative to the
	// context directory. Default "Dockerfile". A file outside the context is
	// read here and sent as DockerfileContent.
	Dockerfile string
	// DockerfileContent, when set, is the Dockerfile, and Dockerfile is
	// ignored.
	DockerfileContent []byte
	// BuildArgs are --build-arg NAME=VALUE.
	BuildArgs map[string]string
	// BuildArgNames are --build-arg NAME without a value, when NAME is not
	// in BuildArgs: Docker passes no value and does not warn of them.
	BuildArgNames []string
	// Secrets are the build's secrets by ID (--secret), for RUN
	// --mount=type=secret: sent to the builder right after the options,
	// never part of them, and kept by the builder in memory for the build
	// only. ReadSecret reads one as `docker buildx build --secret` does.
	// At most 100, each at most 500 KiB.
	Secrets map[string][]byte
	// SSH are the SSH agents the build forwards by ID (--ssh), for RUN
	// --mount=type=ssh: a step's connection to its agent socket travels
	// over the build's stream and is answered here, list and sign
	// requests only. LoadSSHAgent makes one as `docker buildx build
	// --ssh` does. At most 100.
	SSH map[string]SSHAgent
	// Target is the stage to build (--target).
	Target string
	// Labels are set on the image.
	Labels map[string]string
	// NoCache builds every step.
	NoCache bool
	// Network is RUN's network (NetworkDefault: outbound access only).
	Network NetworkMode
	// Resources limits RUN steps (--memory, --cpu-shares, --ulimit, …).
	Resources *RunResources
	// EventOrder is the order OnEvent sees the events in
	// (EventsSequential by default).
	EventOrder EventOrder
	// CacheDir keeps the digests of the context's files between builds, by
	// size and mtime, so that an unchanged file is not hashed again. Empty:
	// strata/context in the user's cache directory, as the CLI; "-": none.
	CacheDir string

	// ContextTar, when set, is the context as a tar stream (plain or
	// compressed: gzip, zstd, bzip2, xz), as `docker build - <
	// context.tar` sends it, and Build's dir is ignored. Dockerfile then
	// names the Dockerfile inside the tar ("Dockerfile" when empty) unless
	// DockerfileContent is set.
	ContextTar io.Reader
	// ContextBlob, when set, is the digest of a tar context already in the
	// blob store (e.g. put with Blobs), and Build's dir is ignored; the
	// Dockerfile is found as for ContextTar.
	ContextBlob string
	// NoContext builds DockerfileContent without a context, as `docker
	// build - < Dockerfile`; Build's dir is ignored.
	NoContext bool

	// OnEvent, when set, receives each event as it comes: the build's
	// BuildAccepted (with its ID, for GetBuild, WatchBuild, CancelBuild),
	// steps started, cached, output, done, warnings, a place in the queue.
	OnEvent func(*BuildEvent)
	// OnContext, when set, is told before the context's contents travel how
	// many bytes go to the builder, out of the context's distinct contents
	// (unique) and all its files (total): the builder asks only for
	// contents it does not hold.
	OnContext func(sending, unique, total int64)
}

// Build builds the directory dir (the build context, filtered by its
// .dockerignore), or the context opts.ContextTar or opts.ContextBlob name,
// and returns the result, with the build's ID, once the image is recorded.
// A Dockerfile error or a failed RUN step is a *BuildError.
//
// The build runs on the builder apart from the call: when the connection
// drops once the builder accepted it, Build reattaches (WatchBuild) where
// it left off, for as long as the builder keeps a detached build (its
// default grace, a minute). Canceling ctx cancels the build (CancelBuild).
func (c *Client) Build(ctx context.Context, dir string, opts BuildOptions) (*BuildResult, error) {
	sources := 0
	for _, set := range []bool{opts.ContextTar != nil, opts.ContextBlob != "", opts.NoContext} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return nil, errors.New("build: at most one of ContextTar, ContextBlob and NoContext")
	}
	if opts.NoContext && opts.DockerfileContent == nil {
		return nil, errors.New("build: NoContext needs DockerfileContent")
	}
	var (
		req  *builderv1.BuildOptions
		bctx *buildcontext.Context
		err  error
	)
	if sources == 0 {
		var walkOpts buildcontext.Options
		if req, walkOpts, err = buildRequest(dir, opts); err != nil {
			return nil, err
		}
		if bctx, err = buildcontext.Walk(walkOpts); err != nil {
			return nil, err
		}
	} else {
		req = streamRequest(opts)
	}
	if err := checkSecrets(opts.Secrets); err != nil {
		return nil, err
	}
	if err := checkAgents(opts.SSH); err != nil {
		return nil, err
	}
	builder, err := c.builder()
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bstream, err := builder.Build(sctx)
	if err != nil {
		return nil, err
	}
	var stream buildcontext.Stream = bstream
	if len(opts.SSH) > 0 {
		agents := newAgentsStream(stream, opts.SSH)
		defer agents.close()
		stream = agents
	}
	if len(opts.Secrets) > 0 {
		stream = secretsStream{Stream: stream, secrets: opts.Secrets}
	}
	f := &buildFollower{event: opts.OnEvent}
	h := buildcontext.Handler{Event: f.track, Sending: opts.OnContext}
	switch {
	case bctx != nil:
		err = bctx.Sync(stream, req, h)
	case opts.ContextTar != nil:
		err = buildcontext.SendTar(stream, req, opts.ContextTar)
	default:
		err = sendOptionsOnly(stream, req)
	}
	var result *BuildResult
	if err == nil {
		result, err = buildcontext.Result(stream, h)
	}
	if err != nil {
		result, err = f.recover(ctx, builder, err)
	}
	if err != nil {
		return nil, asBuildError(err)
	}
	return result, nil
}

// sendOptionsOnly sends the options of a build whose context is a blob or
// none: for none, an empty file list follows.
func sendOptionsOnly(stream buildcontext.Stream, req *builderv1.BuildOptions) error {
	if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: req}}); err != nil {
		return err
	}
	if req.GetContextBlob() == "" {
		if err := stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Last: true}}}); err != nil {
			return err
		}
	}
	return stream.CloseSend()
}

// streamRequest is the options of a build whose context is a tar stream,
// a blob or none: the Dockerfile is a name inside the tar.
func streamRequest(o BuildOptions) *builderv1.BuildOptions {
	req := baseRequest(o)
	req.ContextBlob = o.ContextBlob
	if o.DockerfileContent != nil {
		req.DockerfileContent = o.DockerfileContent
	} else {
		req.Dockerfile = filepath.ToSlash(o.Dockerfile)
	}
	return req
}

// BuildRun is a build started by StartBuild.
type BuildRun struct {
	events chan *BuildEvent
	done   chan struct{}
	result *BuildResult
	err    error
}

// Events delivers the build's events, in order, and is closed when the build
// ends. A caller that does not read it does not hold the build up beyond
// the channel's buffer: reading Events is required until it closes, or
// the context is canceled.
func (r *BuildRun) Events() <-chan *BuildEvent { return r.events }

// Wait waits for the build to end and returns its result or error.
func (r *BuildRun) Wait() (*BuildResult, error) {
	<-r.done
	return r.result, r.err
}

// StartBuild starts Build in the background and delivers its events on a
// channel, for callers that prefer a channel to BuildOptions.OnEvent (which
// StartBuild sets).
func (c *Client) StartBuild(ctx context.Context, dir string, opts BuildOptions) *BuildRun {
	r := &BuildRun{events: make(chan *BuildEvent, 64), done: make(chan struct{})}
	opts.OnEvent = func(ev *BuildEvent) {
		select {
		case r.events <- ev:
		case <-ctx.Done():
		}
	}
	go func() {
		defer close(r.done)
		defer close(r.events)
		r.result, r.err = c.Build(ctx, dir, opts)
	}()
	return r
}

func buildRequest(dir string, o BuildOptions) (*builderv1.BuildOptions, buildcontext.Options, error) {
	contextDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, buildcontext.Options{}, err
	}
	req := baseRequest(o)
	dockerfileRel := "Dockerfile"
	if _, err := os.Lstat(filepath.Join(contextDir, dockerfileRel)); os.IsNotExist(err) {
		// As Docker's CLI does: a lowercase dockerfile when there is no
		// Dockerfile, so that it travels even if .dockerignore names it.
		if _, err := os.Lstat(filepath.Join(contextDir, "dockerfile")); err == nil {
			dockerfileRel = "dockerfile"
		}
	}
	switch {
	case o.DockerfileContent != nil:
		req.DockerfileContent = o.DockerfileContent
		dockerfileRel = ""
	case o.Dockerfile != "":
		abs := o.Dockerfile
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(contextDir, abs)
		}
		rel, err := filepath.Rel(contextDir, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			b, err := os.ReadFile(abs)
			if err != nil {
				return nil, buildcontext.Options{}, fmt.Errorf("unable to prepare context: %w", err)
			}
			req.DockerfileContent = b
			dockerfileRel = ""
		} else {
			dockerfileRel = filepath.ToSlash(rel)
		}
	}
	req.Dockerfile = dockerfileRel
	cacheDir := o.CacheDir
	switch cacheDir {
	case "-":
		cacheDir = ""
	case "":
		if d, err := os.UserCacheDir(); err == nil {
			cacheDir = filepath.Join(d, "strata", "context")
		}
	}
	return req, buildcontext.Options{Dir: contextDir, Dockerfile: dockerfileRel, CacheDir: cacheDir}, nil
}

// baseRequest is the options every build sends, whatever its context.
func baseRequest(o BuildOptions) *builderv1.BuildOptions {
	req := &builderv1.BuildOptions{
		Tags: o.Tags, Target: o.Target, NoCache: o.NoCache, Network: o.Network,
		BuildArgs: map[string]string{}, Labels: map[string]string{}, BuildArgNames: o.BuildArgNames,
		SecretIds: secretIDs(o.Secrets), EventOrder: o.EventOrder,
		SshIds: sortedIDs(o.SSH),
	}
	for k, v := range o.BuildArgs {
		req.BuildArgs[k] = v
	}
	for k, v := range o.Labels {
		req.Labels[k] = v
	}
	if o.Resources != nil && proto.Size(o.Resources) > 0 {
		req.Resources = o.Resources
	}
	return req
}

// errNoResult is a transfer the builder ended without its result.
var errNoResult = errors.New("without a result")

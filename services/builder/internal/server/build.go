package server

import (
	"context"
	"errors"
	"io"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/moby/patternmatcher/ignorefile"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/build"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
)

// Builds runs Build RPCs: it receives the context into the shared content
// store, runs the build, and bounds how many run at once.
type Builds struct {
	builder  *build.Builder
	store    *buildctx.Store
	slots    *slots
	recent   recentContexts
	stopping context.Context
}

// NewBuilds returns a Builds that runs at most maxBuilds builds at once;
// further builds wait for a slot. When stopping ends (the builder is
// told to stop), every running build is canceled: its steps are killed and
// its temporary state removed while the server drains.
func NewBuilds(stopping context.Context, b *build.Builder, store *buildctx.Store, maxBuilds int) *Builds {
	return &Builds{builder: b, store: store, slots: newSlots(maxBuilds), stopping: stopping}
}

// WithBuilds serves Build with b.
func WithBuilds(b *Builds) Option { return func(s *Server) { s.builds = b } }

// Build runs one build over the stream. Closing the stream (or the client
// going away) cancels the build, which kills its RUN processes and removes
// its temporary state.
func (s *Server) Build(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]) error {
	if s.builds == nil {
		return errdefs.Unimplemented("this builder does not serve builds")
	}
	return s.builds.serve(stream)
}

func (b *Builds) serve(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(b.stopping, cancel)()
	start := time.Now()

	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return errdefs.InvalidArgument("build: the first message must carry the options")
	}
	// A build takes its slot before it receives its context, so that
	// builds waiting for one hold neither memory nor disk.
	release, err := b.slots.acquire(ctx, func(ahead int) {
		stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: &builderv1.BuildEvent{
			Event: &builderv1.BuildEvent_Queued{Queued: &builderv1.BuildQueued{Ahead: int32(ahead)}},
		}}})
	})
	if err != nil {
		return err
	}
	defer release()
	dfName := opts.GetDockerfile()
	if dfName == "" {
		dfName = "Dockerfile"
	}
	// A client that names its file list by digest sends the list only when
	// the builder has not seen it lately: a rebuild of an unchanged tree
	// moves neither the list nor any content.
	key := opts.GetContextDigest()
	var bctx *buildctx.Context
	if key != "" {
		bctx = b.recent.get(key + "\x00" + dfName)
		if bctx == nil {
			if err := stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_ContextRequest{ContextRequest: &builderv1.ContextRequest{SendEntries: true}}}); err != nil {
				return err
			}
		}
	}
	fresh := bctx == nil
	entries := 0
	if fresh {
		list, err := receiveList(stream)
		if err != nil {
			return err
		}
		if key != "" {
			if got := listDigest(list); got != key {
				return errdefs.InvalidArgument("build: the context's file list has digest %s, not the %s the options name", got, shorten(key))
			}
		}
		entries = len(list)
		if bctx, err = buildctx.New(list); err != nil {
			return err
		}
	}
	tList := time.Now()
	digests := bctx.Digests()
	defer b.store.Hold(digests)()
	// What the build needs before it can start — the .dockerignore and the
	// Dockerfile — is asked for first; the build then runs while the rest
	// of the context streams in, and only COPY and ADD wait for it.
	dockerfile := opts.GetDockerfileContent()
	var needed []digest.Digest
	if fresh {
		needed = append(needed, entryDigest(bctx, ".dockerignore"))
	}
	if len(dockerfile) == 0 {
		if e, err := bctx.Resolve(dfName); err == nil {
			needed = append(needed, e.Digest)
		}
	}
	missing := firstAsked(b.store.Missing(digests), needed)
	resp := &builderv1.ContextRequest{}
	for _, d := range missing {
		resp.Digests = append(resp.Digests, string(d))
	}
	if err := stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_ContextRequest{ContextRequest: resp}}); err != nil {
		return err
	}
	tCtx := time.Now()
	xfer := newContextTransfer(missing, needed)
	go func() {
		received, err := b.receive(stream, missing, bctx, xfer.committed)
		xfer.finish(received, err)
		if err != nil {
			cancel() // the build cannot have its context
		}
		if b.builder.Log != nil {
			b.builder.Log.InfoContext(ctx, "build context received", "entries", entries, "known", !fresh, "missing", len(missing), "bytes", received,
				"list", tList.Sub(start), "index", tCtx.Sub(tList), "transfer", time.Since(tCtx))
		}
	}()
	// The stream is not the handler's to end while the transfer reads it.
	defer func() { <-xfer.done }()
	if err := xfer.wait(ctx, needed); err != nil {
		return err
	}
	if fresh {
		if err := b.ignore(bctx, dfName); err != nil {
			return err
		}
		if key != "" {
			b.recent.put(key+"\x00"+dfName, bctx)
		}
	}
	if len(dockerfile) == 0 {
		if dockerfile, err = b.readDockerfile(bctx, opts.GetDockerfile()); err != nil {
			return err
		}
	}

	// Events come from the build's goroutine and from RUN output copiers;
	// a stream allows one sender at a time.
	var mu sync.Mutex
	var sendErr error
	events := func(ev *builderv1.BuildEvent) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr != nil {
			return
		}
		if sendErr = stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: ev}}); sendErr != nil {
			cancel()
		}
	}
	args := map[string]string{}
	for k, v := range opts.GetBuildArgs() {
		args[k] = v
	}
	// Keep the context store within its bound once the build no longer
	// holds its files.
	defer func() {
		go func() {
			if _, err := b.store.Trim(context.Background()); err != nil && b.builder.Log != nil {
				b.builder.Log.Warn("trimming the context store", "error", err.Error())
			}
		}()
	}()
	res, err := b.builder.Build(ctx, &build.Request{
		Dockerfile:      dockerfile,
		Context:         bctx,
		ContextContents: xfer.all,
		BuildArgs:       args,
		Target:          opts.GetTarget(),
		Labels:          opts.GetLabels(),
		NoCache:         opts.GetNoCache(),
		Network:         opts.GetNetwork(),
		Resources:       opts.GetResources(),
		Tags:            opts.GetTags(),
	}, events)
	if err == nil {
		// A build that needed no context contents still ends only once
		// they all came: the client sends them before it reads the result.
		err = xfer.all(ctx)
	}
	if err != nil {
		if xerr := xfer.err(); xerr != nil {
			return xerr
		}
		if ctx.Err() != nil && stream.Context().Err() != nil {
			return errdefs.New(errdefs.ErrCanceled, "build canceled: %v", stream.Context().Err())
		}
		if errdefs.IsUnavailable(err) {
			// A service the build needs went away (the blob store, the
			// metadata service, a registry): the error names it.
			return errdefs.New(errdefs.ErrUnavailable, "build failed: %w", err)
		}
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&builderv1.BuildResponse{Response: &builderv1.BuildResponse_Result{Result: &builderv1.BuildResult{
		ImageId:              res.ImageID,
		ManifestDigest:       res.ManifestDigest,
		Tags:                 res.Tags,
		ContextBytesReceived: xfer.received,
		Duration:             durationpb.New(time.Since(start)),
	}}})
}

// receiveList reads the context's file list.
func receiveList(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]) ([]*builderv1.FileEntry, error) {
	var list []*builderv1.FileEntry
	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errdefs.InvalidArgument("build: the stream ended before the context's file list")
			}
			return nil, err
		}
		e := m.GetEntries()
		if e == nil {
			return nil, errdefs.InvalidArgument("build: expected the context's file list after the options")
		}
		list = append(list, e.GetEntries()...)
		if len(list) > buildctx.MaxEntries {
			return nil, errdefs.ResourceExhausted("build: the context has more than %d entries", buildctx.MaxEntries)
		}
		if e.GetLast() {
			return list, nil
		}
	}
}

// listDigest is the digest of a file list as BuildOptions.context_digest
// defines it.
func listDigest(list []*builderv1.FileEntry) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&builderv1.ContextEntries{Entries: list})
	if err != nil {
		return ""
	}
	return string(digest.FromBytes(b))
}

// recentContexts keeps the last few contexts' trees by list digest.
type recentContexts struct {
	mu    sync.Mutex
	order []string
	trees map[string]*buildctx.Context
}

// recentMax is how many contexts the builder remembers.
const recentMax = 16

func (r *recentContexts) get(key string) *buildctx.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.trees[key]
}

func (r *recentContexts) put(key string, c *buildctx.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.trees == nil {
		r.trees = map[string]*buildctx.Context{}
	}
	if _, ok := r.trees[key]; !ok {
		r.order = append(r.order, key)
	}
	r.trees[key] = c
	for len(r.order) > recentMax {
		delete(r.trees, r.order[0])
		r.order = r.order[1:]
	}
}

// entryDigest returns the content digest of the regular file at p in the
// context, "" when there is none.
func entryDigest(c *buildctx.Context, p string) digest.Digest {
	if e, ok := c.Lookup(p); ok && e.Mode.IsRegular() {
		return e.Digest
	}
	return ""
}

// firstAsked orders the missing digests so that those of first come first.
func firstAsked(missing, first []digest.Digest) []digest.Digest {
	var head, tail []digest.Digest
	for _, d := range missing {
		if slices.Contains(first, d) {
			head = append(head, d)
		} else {
			tail = append(tail, d)
		}
	}
	return append(head, tail...)
}

// contextTransfer is a context transfer running alongside its build.
type contextTransfer struct {
	done     chan struct{} // closed when the transfer ended
	received int64         // set before done is closed
	fail     error         // set before done is closed

	mu      sync.Mutex
	waiting map[digest.Digest]chan struct{} // closed when the digest is in
}

func newContextTransfer(missing, first []digest.Digest) *contextTransfer {
	t := &contextTransfer{done: make(chan struct{}), waiting: map[digest.Digest]chan struct{}{}}
	for _, d := range first {
		if d != "" && slices.Contains(missing, d) {
			t.waiting[d] = make(chan struct{})
		}
	}
	return t
}

func (t *contextTransfer) committed(d digest.Digest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, ok := t.waiting[d]; ok {
		close(ch)
		delete(t.waiting, d)
	}
}

func (t *contextTransfer) finish(received int64, err error) {
	t.received, t.fail = received, err
	close(t.done)
}

// err is the transfer's error once it ended, nil before.
func (t *contextTransfer) err() error {
	select {
	case <-t.done:
		return t.fail
	default:
		return nil
	}
}

// wait waits until the contents of ds are in (those not asked for are in
// already).
func (t *contextTransfer) wait(ctx context.Context, ds []digest.Digest) error {
	for _, d := range ds {
		t.mu.Lock()
		ch, ok := t.waiting[d]
		t.mu.Unlock()
		if !ok {
			continue
		}
		select {
		case <-ch:
		case <-t.done:
			if t.fail != nil {
				return t.fail
			}
		case <-ctx.Done():
			if err := t.err(); err != nil {
				return err
			}
			return ctx.Err()
		}
	}
	return nil
}

// all waits until every content asked for is in.
func (t *contextTransfer) all(ctx context.Context) error {
	select {
	case <-t.done:
		return t.fail
	case <-ctx.Done():
		if err := t.err(); err != nil {
			return err
		}
		return ctx.Err()
	}
}

// receive stores the file contents the client sends for the digests asked
// for, each no larger than bctx declares it, calling committed as each is
// stored, and returns how many bytes came.
func (b *Builds) receive(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse], want []digest.Digest, bctx *buildctx.Context, committed func(digest.Digest)) (int64, error) {
	batch := b.store.NewBatch()
	defer batch.Close()
	pending := make(map[digest.Digest]*buildctx.Writer, len(want))
	for _, d := range want {
		pending[d] = nil
	}
	defer func() {
		for _, w := range pending {
			if w != nil {
				w.Close()
			}
		}
	}()
	var total int64
	for len(pending) > 0 {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, errdefs.InvalidArgument("build: the stream ended with %d requested file contents not sent", len(pending))
			}
			return 0, err
		}
		fd := m.GetFileData()
		if fd == nil {
			return 0, errdefs.InvalidArgument("build: expected file contents the builder asked for")
		}
		d := digest.Digest(fd.GetDigest())
		w, asked := pending[d]
		if !asked {
			return 0, errdefs.InvalidArgument("build: file content %q was not asked for", shorten(fd.GetDigest()))
		}
		if w == nil {
			size, _ := bctx.Size(d)
			if w, err = batch.NewWriter(d, size); err != nil {
				return 0, err
			}
			pending[d] = w
		}
		if fd.GetOffset() != w.Offset() {
			return 0, errdefs.InvalidArgument("build: file content %s: data at offset %d, want %d", d, fd.GetOffset(), w.Offset())
		}
		if _, err := w.Write(fd.GetData()); err != nil {
			return 0, err
		}
		total += int64(len(fd.GetData()))
		if fd.GetEof() {
			delete(pending, d)
			if err := w.Commit(); err != nil {
				return 0, err
			}
			committed(d)
		}
	}
	return total, nil
}

// ignore applies the context's .dockerignore on the builder's side too.
func (b *Builds) ignore(c *buildctx.Context, dockerfile string) error {
	e, ok := c.Lookup(".dockerignore")
	if !ok || !e.Mode.IsRegular() {
		return nil
	}
	f, err := b.store.Open(e.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return errdefs.InvalidArgument(".dockerignore: %v", err)
	}
	return c.Ignore(patterns, ".dockerignore", path.Clean(dockerfile))
}

// readDockerfile reads the Dockerfile from the context. A Dockerfile that is
// a symlink is followed inside the context only.
func (b *Builds) readDockerfile(c *buildctx.Context, name string) ([]byte, error) {
	if name == "" {
		name = "Dockerfile"
	}
	e, err := c.Resolve(name)
	if err != nil {
		return nil, errdefs.New(kindOf(err), "Dockerfile %s: %w", name, err)
	}
	if !e.Mode.IsRegular() {
		return nil, errdefs.InvalidArgument("Dockerfile %s is not a regular file in the context", name)
	}
	if e.Size > 1<<20 {
		return nil, errdefs.InvalidArgument("Dockerfile %s is %d bytes; the limit is %d", name, e.Size, 1<<20)
	}
	f, err := b.store.Open(e.Digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20+1))
}

func kindOf(err error) error {
	var e *errdefs.Error
	if errors.As(err, &e) {
		return e.Kind()
	}
	return errdefs.ErrInternal
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

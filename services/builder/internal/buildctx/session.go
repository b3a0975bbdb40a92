package buildctx

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path"
	"slices"
	"time"

	"github.com/moby/patternmatcher/ignorefile"
	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
)

// maxDockerfile bounds a Dockerfile and a .dockerignore read from the context.
const maxDockerfile = 1 << 20

// Stream is the builder's side of a Build stream, as the context-sync
// protocol uses it (grpc.BidiStreamingServer[BuildRequest, BuildResponse]).
type Stream interface {
	Send(*builderv1.BuildResponse) error
	Recv() (*builderv1.BuildRequest, error)
}

// Receiver receives build contexts into a Store shared by every build, and
// bounds how many builds run at once: a build takes its slot before it
// receives its context, so that builds waiting for one hold neither memory
// nor disk.
type Receiver struct {
	store  *Store
	slots  *slots
	recent recentContexts
	log    *slog.Logger

	blobs     BlobOpener
	tarLimits compression.Limits
}

// NewReceiver returns a Receiver into store that lets at most maxBuilds
// builds have a context at once. log may be nil.
func NewReceiver(store *Store, maxBuilds int, log *slog.Logger) *Receiver {
	return &Receiver{store: store, slots: newSlots(maxBuilds), log: log}
}

// Session is one build's context, its contents possibly still streaming in.
type Session struct {
	// Context is the context's tree, .dockerignore applied.
	Context *Context
	// Dockerfile is the Dockerfile: the options' content, or the file read
	// from the context.
	Dockerfile []byte

	xfer    *transfer
	release []func()
	trim    func()
}

// Receive runs the builder's half of the context-sync protocol for the
// build whose options came first on stream. It waits for a build slot
// (telling the client its place in the queue), receives the file list
// unless the client names one seen lately, asks for the contents the store
// does not hold, and returns once the Dockerfile and the .dockerignore are
// in; the other contents keep streaming while the build runs (see
// Session.Contents). A failed transfer calls cancel, which ends the build.
// The caller must Close a session it got.
func (r *Receiver) Receive(ctx context.Context, stream Stream, opts *builderv1.BuildOptions, cancel func()) (*Session, error) {
	start := time.Now()
	release, err := r.slots.acquire(ctx, func(ahead int) { stream.Send(queuedEvent(ahead)) })
	if err != nil {
		return nil, err
	}
	s := &Session{release: []func(){release}, trim: r.trimLater}
	if err := r.sync(ctx, s, stream, opts, cancel, start); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// sync runs the protocol for s, which holds a slot.
func (r *Receiver) sync(ctx context.Context, s *Session, stream Stream, opts *builderv1.BuildOptions, cancel func(), start time.Time) error {
	dfName := opts.GetDockerfile()
	if dfName == "" {
		dfName = "Dockerfile"
	}
	if opts.GetContextTar() || opts.GetContextBlob() != "" {
		return r.syncTar(ctx, s, stream, opts, dfName, start)
	}
	key := opts.GetContextDigest()
	if key != "" {
		key += "\x00" + dfName
	}
	bctx, entries, err := r.list(stream, opts.GetContextDigest(), key)
	if err != nil {
		return err
	}
	fresh := entries >= 0
	dfName = dockerfileName(bctx, dfName)
	tList := time.Now()
	digests := bctx.Digests()
	s.release = append(s.release, r.store.Hold(digests))
	// What the build needs before it can start — the .dockerignore and the
	// Dockerfile — is asked for first; the build then runs while the rest
	// of the context streams in, and only COPY and ADD wait for it.
	s.Dockerfile = dockerfileOf(opts)
	var needed []digest.Digest
	if fresh {
		needed = append(needed, entryDigest(bctx, ".dockerignore"))
	}
	if len(s.Dockerfile) == 0 {
		if e, err := bctx.Resolve(dfName); err == nil {
			needed = append(needed, e.Digest)
		}
	}
	missing := firstAsked(r.store.Missing(digests), needed)
	if err := stream.Send(contextRequest(missing)); err != nil {
		return err
	}
	tCtx := time.Now()
	s.xfer = newTransfer(missing, needed)
	go func() {
		received, err := r.receive(stream, missing, bctx, s.xfer.committed)
		s.xfer.finish(received, err)
		if err != nil {
			cancel() // the build cannot have its context
		}
		if r.log != nil {
			r.log.InfoContext(ctx, "build context received", "entries", max(entries, 0), "known", !fresh, "missing", len(missing), "bytes", received,
				"list", tList.Sub(start), "index", tCtx.Sub(tList), "transfer", time.Since(tCtx))
		}
	}()
	if err := s.xfer.wait(ctx, needed); err != nil {
		return err
	}
	if fresh {
		if err := r.ignore(bctx, dfName); err != nil {
			return err
		}
		if key != "" {
			r.recent.put(key, bctx)
		}
	}
	s.Context = bctx
	if len(s.Dockerfile) == 0 {
		if s.Dockerfile, err = r.readDockerfile(bctx, dfName); err != nil {
			return err
		}
	}
	return nil
}

// list returns the context's tree: the one remembered under key, or one
// made from the file list the client sends when asked (key is "" when the
// client names no list). entries is the length of the list received, -1
// when the tree was remembered.
func (r *Receiver) list(stream Stream, listDigest, key string) (c *Context, entries int, err error) {
	// A client that names its file list by digest sends the list only when
	// the builder has not seen it lately: a rebuild of an unchanged tree
	// moves neither the list nor any content.
	if key != "" {
		if c := r.recent.get(key); c != nil {
			return c, -1, nil
		}
		ask := &builderv1.BuildResponse{Response: &builderv1.BuildResponse_ContextRequest{ContextRequest: &builderv1.ContextRequest{SendEntries: true}}}
		if err := stream.Send(ask); err != nil {
			return nil, 0, err
		}
	}
	list, err := receiveList(stream)
	if err != nil {
		return nil, 0, err
	}
	if listDigest != "" {
		if got := ListDigest(list); got != listDigest {
			return nil, 0, errdefs.InvalidArgument("build: the context's file list has digest %s, not the %s the options name", got, shortString(listDigest))
		}
	}
	c, err = New(list)
	return c, len(list), err
}

// Contents waits until every content the builder asked for is in.
func (s *Session) Contents(ctx context.Context) error { return s.xfer.all(ctx) }

// Received returns the bytes of file contents received, once Contents
// returned nil.
func (s *Session) Received() int64 { return s.xfer.received }

// Err returns the transfer's error once the transfer has failed, nil
// before. A build that fails because its context did not come fails with
// this error.
func (s *Session) Err() error {
	if s.xfer == nil {
		return nil
	}
	return s.xfer.err()
}

// Close waits for the transfer to end (the stream is not the handler's to
// end while the transfer reads it), then releases the session's contents
// and build slot and trims the store in the background.
func (s *Session) Close() {
	if s.xfer != nil {
		<-s.xfer.done
	}
	for i := len(s.release) - 1; i >= 0; i-- {
		s.release[i]()
	}
	s.trim()
}

// trimLater keeps the store within its bound once a build no longer holds
// its files.
func (r *Receiver) trimLater() {
	go func() {
		if _, err := r.store.Trim(context.Background()); err != nil && r.log != nil {
			r.log.Warn("trimming the context store", "error", err.Error())
		}
	}()
}

func queuedEvent(ahead int) *builderv1.BuildResponse {
	return &builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: &builderv1.BuildEvent{
		Event: &builderv1.BuildEvent_Queued{Queued: &builderv1.BuildQueued{Ahead: int32(ahead)}},
	}}}
}

func contextRequest(missing []digest.Digest) *builderv1.BuildResponse {
	req := &builderv1.ContextRequest{}
	for _, d := range missing {
		req.Digests = append(req.Digests, string(d))
	}
	return &builderv1.BuildResponse{Response: &builderv1.BuildResponse_ContextRequest{ContextRequest: req}}
}

// receiveList reads the context's file list.
func receiveList(stream Stream) ([]*builderv1.FileEntry, error) {
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
		if len(list) > MaxEntries {
			return nil, errdefs.ResourceExhausted("build: the context has more than %d entries", MaxEntries)
		}
		if e.GetLast() {
			return list, nil
		}
	}
}

// ListDigest is the digest of a file list as BuildOptions.context_digest
// defines it.
func ListDigest(list []*builderv1.FileEntry) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&builderv1.ContextEntries{Entries: list})
	if err != nil {
		return ""
	}
	return string(digest.FromBytes(b))
}

// entryDigest returns the content digest of the regular file at p in the
// context, "" when there is none.
func entryDigest(c *Context, p string) digest.Digest {
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

// receive stores the file contents the client sends for the digests asked
// for, each no larger than bctx declares it, calling committed as each is
// stored, and returns how many bytes came.
func (r *Receiver) receive(stream Stream, want []digest.Digest, bctx *Context, committed func(digest.Digest)) (int64, error) {
	batch := r.store.NewBatch()
	defer batch.Close()
	pending := make(map[digest.Digest]*Writer, len(want))
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
		fd, err := nextFileData(stream, len(pending))
		if err != nil {
			return 0, err
		}
		d := digest.Digest(fd.GetDigest())
		w, asked := pending[d]
		if !asked {
			return 0, errdefs.InvalidArgument("build: file content %q was not asked for", shortString(fd.GetDigest()))
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

// nextFileData reads the next message, which must be file contents; pending
// is how many contents are still to come.
func nextFileData(stream Stream, pending int) (*builderv1.FileData, error) {
	m, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errdefs.InvalidArgument("build: the stream ended with %d requested file contents not sent", pending)
		}
		return nil, err
	}
	fd := m.GetFileData()
	if fd == nil {
		return nil, errdefs.InvalidArgument("build: expected file contents the builder asked for")
	}
	return fd, nil
}

// ignore applies the context's .dockerignore on the builder's side too.
func (r *Receiver) ignore(c *Context, dockerfile string) error {
	e, ok := c.Lookup(".dockerignore")
	if !ok || !e.Mode.IsRegular() {
		return nil
	}
	f, err := r.store.Open(e.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(io.LimitReader(f, maxDockerfile))
	if err != nil {
		return errdefs.InvalidArgument(".dockerignore: %v", err)
	}
	return c.Ignore(patterns, ".dockerignore", path.Clean(dockerfile))
}

// dockerfileName is the Dockerfile's name in c: name, or "dockerfile" when
// name is the default "Dockerfile" and only the lowercase one is there, as
// Docker's daemon looks for it.
func dockerfileName(c *Context, name string) string {
	has := func(p string) bool {
		_, in := c.Lookup(p)
		_, removed := c.Removed(p)
		return in || removed
	}
	if name == "Dockerfile" && !has(name) && has("dockerfile") {
		return "dockerfile"
	}
	return name
}

// readDockerfile reads the Dockerfile from the context. A Dockerfile that is
// a symlink is followed inside the context only.
func (r *Receiver) readDockerfile(c *Context, name string) ([]byte, error) {
	e, err := c.Resolve(name)
	if removed, ok := c.Removed(name); err != nil && ok {
		e, err = removed, nil // .dockerignore names it: read, but out of the context
	}
	if err != nil {
		return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile %s: %w", name, err)
	}
	if !e.Mode.IsRegular() {
		return nil, errdefs.InvalidArgument("Dockerfile %s is not a regular file in the context", name)
	}
	if e.Size > maxDockerfile {
		return nil, errdefs.InvalidArgument("Dockerfile %s is %d bytes; the limit is %d", name, e.Size, maxDockerfile)
	}
	f, err := r.store.Open(e.Digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxDockerfile+1))
}

// dockerfileOf is the Dockerfile the options carry, if any.
func dockerfileOf(opts *builderv1.BuildOptions) []byte {
	if b := opts.GetDockerfileContent(); len(b) > 0 {
		return b
	}
	return []byte(opts.GetDockerfileText())
}

// syncTar receives a context sent as a tar stream, or read from the blob
// store, whole, before the build starts.
func (r *Receiver) syncTar(ctx context.Context, s *Session, stream Stream, opts *builderv1.BuildOptions, dfName string, start time.Time) error {
	var (
		list     []*builderv1.FileEntry
		received int64
		err      error
	)
	switch blob := opts.GetContextBlob(); {
	case opts.GetContextTar() && blob != "":
		return errdefs.InvalidArgument("build: the options name both a tar stream and a blob as the context")
	case blob != "":
		if r.blobs == nil {
			return errdefs.FailedPrecondition("build: this builder takes no context from the blob store")
		}
		d := digest.Digest(blob)
		if err := d.Validate(); err != nil {
			return errdefs.InvalidArgument("build: context_blob %q: %v", shortString(blob), err)
		}
		rc, err := r.blobs(ctx, d)
		if err != nil {
			return err
		}
		defer rc.Close()
		list, received, err = r.fromTar(rc, s, "context blob "+blob)
		if err != nil {
			return err
		}
	default:
		ts := &tarStream{stream: stream}
		if list, received, err = r.fromTar(ts, s, "context tar"); err != nil {
			return err
		}
		if err := ts.drain(); err != nil {
			return err
		}
	}
	bctx, err := New(list)
	if err != nil {
		return err
	}
	s.xfer = newTransfer(nil, nil)
	s.xfer.finish(received, nil)
	if err := r.ignore(bctx, dfName); err != nil {
		return err
	}
	s.Context = bctx
	if s.Dockerfile = dockerfileOf(opts); len(s.Dockerfile) == 0 {
		if s.Dockerfile, err = r.readDockerfile(bctx, dfName); err != nil {
			return err
		}
	}
	if r.log != nil {
		r.log.InfoContext(ctx, "build context received", "entries", len(list), "tar", true, "bytes", received, "took", time.Since(start))
	}
	return nil
}

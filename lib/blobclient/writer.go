package blobclient

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobwire"
	"github.com/strata-build/strata/lib/errdefs"
)

// SizeUnknown declares that a writer does not know the blob's size.
const SizeUnknown = -1

// ChunkSize is the most data one upload message carries.
const ChunkSize = 1 << 20

// lockWait bounds how long NewWriter waits for the server to let go of a
// ref whose previous stream just broke.
const lockWait = 2 * time.Second

// WriterOption configures NewWriter.
type WriterOption func(*writerConfig)

type writerConfig struct {
	ref, mediaType string
	refSet         bool
	digestAtCommit bool
	resumeOnly     bool
}

// WithRef names the upload, so that a broken one can be resumed with the
// same ref. Without it the writer picks a random ref (Writer.Ref).
func WithRef(ref string) WriterOption {
	return func(c *writerConfig) { c.ref, c.refSet = ref, true }
}

// WithDigestAtCommit is for a writer opened without a digest whose caller
// computes the digest itself and ends with CommitDigest (a layer writer
// hashing what it compresses): the writer then does not hash the bytes a
// second time. The server checks the declared digest either way; Commit
// without a digest is refused.
func WithDigestAtCommit() WriterOption { return func(c *writerConfig) { c.digestAtCommit = true } }

// WithResumeOnly makes NewWriter resume the unfinished upload under the
// ref (WithRef) and fail with ErrNotFound when there is none, rather than
// start one: the writer's Offset then says where the upload stands, with
// no UploadStatus before it.
func WithResumeOnly() WriterOption { return func(c *writerConfig) { c.resumeOnly = true } }

// WithMediaType passes the blob's media type, a hint for the storage.
func WithMediaType(mt string) WriterOption { return func(c *writerConfig) { c.mediaType = mt } }

// NewRef returns a random upload ref.
func NewRef() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "upload-" + hex.EncodeToString(b[:])
}

// Writer streams one blob to the store. Write the bytes from Offset on (0 for
// a new upload), then Commit; Close without Commit leaves the upload on the
// server for a later writer with the same ref. When Exists is true the blob
// is stored already: Write discards and Commit returns the stored blob
// without sending anything.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	stream   blobv1.BlobService_WriteClient
	cancel   context.CancelFunc
	bufs     *blobwire.Pool
	ref      string
	declared digest.Digest
	size     int64
	start    int64 // the server's offset when the writer began
	offset   int64 // bytes sent so far, from the blob's start
	exists   bool
	existing Info
	h        hash.Hash // nil when the digest is declared
	// buf is the message being filled, n bytes of it so far. Once sent it
	// belongs to gRPC until written out, so each message takes a new one
	// from the pool.
	buf  *[]byte
	n    int
	err  error // sticky: the stream is gone
	done bool
}

// NewWriter starts, or resumes, an upload of the blob d of size bytes. d may
// be empty when the digest is known only at the end: Commit then declares
// the digest of the bytes written. size is SizeUnknown (-1) when unknown;
// otherwise a blob of any other size is refused.
func (c *Client) NewWriter(ctx context.Context, d digest.Digest, size int64, opts ...WriterOption) (*Writer, error) {
	var cfg writerConfig
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.refSet {
		cfg.ref = NewRef()
	}
	first := &blobv1.WriteRequest{Ref: cfg.ref, Digest: string(d), MediaType: cfg.mediaType, ResumeOnly: cfg.resumeOnly}
	if size >= 0 {
		first.Size = &size
	}
	deadline := time.Now().Add(lockWait)
	for {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := c.api.Write(sctx, grpc.ForceCodecV2(c.codec))
		if err != nil {
			cancel()
			return nil, err
		}
		resp, err := func() (*blobv1.WriteResponse, error) {
			if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return stream.Recv()
		}()
		if err == nil {
			w := &Writer{
				stream: stream, cancel: cancel, bufs: c.bufs, ref: cfg.ref, declared: d, size: size,
				start: resp.GetOffset(), offset: resp.GetOffset(), exists: resp.GetExists(),
			}
			if d == "" && !cfg.digestAtCommit {
				w.h = sha256.New()
			}
			if w.exists {
				w.existing = infoFrom(resp.GetBlob())
			}
			return w, nil
		}
		cancel()
		if !locked(err) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// locked reports whether err says that another stream holds the ref.
func locked(err error) bool {
	var e *errdefs.Error
	return errors.As(err, &e) && e.Reason() == "UPLOAD_LOCKED"
}

// Ref names the upload.
func (w *Writer) Ref() string { return w.ref }

// Offset is where the next Write continues in the blob: what the server held
// when the writer began, plus what was written since.
func (w *Writer) Offset() int64 { return w.offset + int64(w.n) }

// Exists reports whether the blob was stored already when the writer began.
func (w *Writer) Exists() bool { return w.exists }

// Write implements io.Writer. Bytes go out in messages of ChunkSize.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.exists {
		return len(p), nil
	}
	w.hash(p)
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = w.bufs.Get(ChunkSize)
		}
		k := copy((*w.buf)[w.n:], p)
		w.n += k
		p = p[k:]
		if w.n == ChunkSize {
			if err := w.flush(&blobv1.WriteRequest{}); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// ReadFrom implements io.ReadFrom: io.Copy reads straight into the
// writer's message buffers.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.exists {
		return io.Copy(io.Discard, r)
	}
	var total int64
	for {
		if w.buf == nil {
			w.buf = w.bufs.Get(ChunkSize)
		}
		n, err := r.Read((*w.buf)[w.n:])
		w.hash((*w.buf)[w.n : w.n+n])
		w.n += n
		total += int64(n)
		if w.n == ChunkSize {
			if serr := w.flush(&blobv1.WriteRequest{}); serr != nil {
				return total, serr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// hash hashes p when Commit will need the digest of the bytes written; a
// declared digest is the server's to check.
func (w *Writer) hash(p []byte) {
	if w.h != nil {
		w.h.Write(p)
	}
}

func (w *Writer) usable() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return errdefs.FailedPrecondition("upload %q is finished", w.ref)
	}
	// gRPC buffers sends, so a canceled stream may still accept a message;
	// a writer whose context is gone must fail at once, not later.
	if err := w.stream.Context().Err(); err != nil {
		w.err = err
		return err
	}
	return nil
}

// flush sends the buffered bytes in req (a message with nothing else, or
// with the commit or pause), and hands the buffer to gRPC.
func (w *Writer) flush(req *blobv1.WriteRequest) error {
	var data mem.BufferSlice
	if w.buf != nil && w.n > 0 && !w.exists {
		data = mem.BufferSlice{w.bufs.Buffer(w.buf, w.n)}
		w.buf = nil
	}
	n := w.n
	w.n = 0
	req.Offset = w.offset
	err := w.send(data, req)
	if err == nil {
		w.offset += int64(n)
	}
	return err
}

// send sends req with data; on failure it fetches the server's error and
// keeps it.
func (w *Writer) send(data mem.BufferSlice, req *blobv1.WriteRequest) error {
	err := w.stream.SendMsg(&blobwire.Bulk{Msg: req, Data: data})
	data.Free() // gRPC holds its own reference until the bytes are sent
	if errors.Is(err, io.EOF) {
		// The server ended the stream; its status says why.
		_, err = w.stream.Recv()
		if err == nil || errors.Is(err, io.EOF) {
			err = errdefs.Internal("upload %q: the server ended the stream early", w.ref)
		}
	}
	if err != nil {
		w.err = err
		w.cancel()
		return err
	}
	return nil
}

// Commit ends the upload; the server checks size and digest and makes the
// blob visible. Without a declared digest, it declares the digest of the
// bytes written, which needs the writer to have written them all (a resumed
// writer must use CommitDigest). A mismatch is ErrInvalidArgument naming both
// digests, and nothing is stored.
func (w *Writer) Commit(ctx context.Context) (Info, error) {
	d := w.declared
	if d == "" && !w.exists {
		if w.start != 0 {
			return Info{}, errdefs.InvalidArgument("upload %q resumed at %d: commit it with its digest (CommitDigest)", w.ref, w.start)
		}
		if w.h == nil {
			return Info{}, errdefs.InvalidArgument("upload %q was opened WithDigestAtCommit: commit it with its digest (CommitDigest)", w.ref)
		}
		d = digest.NewDigest(digest.SHA256, w.h)
	}
	return w.CommitDigest(ctx, d)
}

// CommitDigest is Commit declaring d as the blob's digest; when the writer
// declared one already, they must agree.
func (w *Writer) CommitDigest(ctx context.Context, d digest.Digest) (Info, error) {
	if err := w.usable(); err != nil {
		return Info{}, err
	}
	stop := context.AfterFunc(ctx, w.cancel)
	defer stop()
	w.done = true
	defer w.cancel()
	defer w.release()
	if err := w.flush(&blobv1.WriteRequest{Commit: true, Digest: string(d)}); err != nil {
		return Info{}, err
	}
	resp, err := w.stream.Recv()
	if err != nil {
		return Info{}, err
	}
	if !resp.GetCommitted() {
		return Info{}, errdefs.Internal("upload %q: the server answered the commit without committing", w.ref)
	}
	return infoFrom(resp.GetBlob()), nil
}

// Pause ends the writer without a Commit and returns the offset the server
// keeps for the upload, every byte written: a later writer with the same
// ref resumes there. It fails when the server could not keep them all
// (UploadStatus then says how far the upload came).
func (w *Writer) Pause(ctx context.Context) (int64, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, w.cancel)
	defer stop()
	w.done = true
	defer w.cancel()
	defer w.release()
	if err := w.flush(&blobv1.WriteRequest{Pause: true}); err != nil {
		return 0, err
	}
	// The stream's end is sent too: a blob store older than pause, which
	// ignores the field and would wait for more, then ends the stream
	// NO_COMMIT, keeping every byte, rather than hanging.
	if err := w.stream.CloseSend(); err != nil {
		return 0, err
	}
	resp, err := w.stream.Recv()
	if noCommit(err) {
		return w.offset, nil
	}
	if err != nil {
		return 0, err
	}
	return resp.GetOffset(), nil
}

// noCommit reports whether err says that the stream ended without a
// commit and the server kept the bytes.
func noCommit(err error) bool {
	var e *errdefs.Error
	return errors.As(err, &e) && e.Reason() == "NO_COMMIT"
}

// Close ends the writer. Without a Commit, the upload stays on the server,
// resumable under Ref, with every byte written (Close sends what Write held
// back); Close waits (a little) until the server has let go of it, so that
// a new writer can take it at once.
func (w *Writer) Close() error {
	if !w.done && w.err == nil && w.n > 0 {
		_ = w.flush(&blobv1.WriteRequest{})
	}
	w.release()
	if w.done || w.err != nil {
		w.cancel()
		return nil
	}
	w.done = true
	defer w.cancel()
	t := time.AfterFunc(5*time.Second, w.cancel)
	defer t.Stop()
	if err := w.stream.CloseSend(); err != nil {
		return nil
	}
	for {
		if _, err := w.stream.Recv(); err != nil {
			return nil // the server's "ended without a commit"
		}
	}
}

// release gives back a buffer that was never sent.
func (w *Writer) release() {
	if w.buf != nil {
		w.bufs.Put(w.buf)
		w.buf, w.n = nil, 0
	}
}

// Put uploads the bytes of r as the blob d of size bytes (d may be empty
// and size SizeUnknown, as for NewWriter) and returns the stored blob. When
// the blob is stored already nothing is sent, but for a small blob of known
// digest and size, which is sent whole in one message (see putWhole) and
// checked against the stored one. When r can seek (a file),
// a broken stream or an unavailable server is retried a few times,
// resuming where the server's copy ends; and when d is empty, r is read
// twice: first for its digest, so that a stored blob is not sent again.
func (c *Client) Put(ctx context.Context, r io.Reader, d digest.Digest, size int64, opts ...WriterOption) (Info, error) {
	seeker, _ := r.(io.Seeker)
	if seeker != nil && d == "" {
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err != nil {
			return Info{}, err
		}
		if _, err := seeker.Seek(0, io.SeekStart); err != nil {
			return Info{}, err
		}
		d = digest.NewDigest(digest.SHA256, h)
		if size < 0 {
			size = n
		}
	}
	var cfg writerConfig
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.refSet {
		cfg.ref = NewRef()
		opts = append(opts, WithRef(cfg.ref))
	}
	put, canRetry := func() (Info, error) { return c.putOnce(ctx, r, seeker, d, size, opts) }, seeker != nil
	if d != "" && size >= 0 && size < ChunkSize && !cfg.refSet && !cfg.resumeOnly {
		// Read one byte past size, so that a longer input is sent as it
		// is and refused by the server, as on the upload path.
		b, err := io.ReadAll(io.LimitReader(r, size+1))
		if err != nil {
			return Info{}, err
		}
		put, canRetry = func() (Info, error) {
			// A ref of its own each time: an older blob store may keep
			// a failed attempt's bytes under the last one, and one
			// message has nothing to resume.
			cfg.ref = NewRef()
			return c.putWhole(ctx, b, d, size, cfg)
		}, true
	}
	const attempts = 5
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		info, err := put()
		if err == nil || !canRetry || attempt == attempts || !retryable(err) || ctx.Err() != nil {
			return info, err
		}
		select {
		case <-ctx.Done():
			return Info{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func retryable(err error) bool { return errdefs.Code(err) == codes.Unavailable }

// putWhole sends the small blob b whole, with its commit, in the stream's
// first message, under a ref of its own (no upload is held under it): the
// blob store then stores it in one step, one S3 request where an upload
// takes five, which is most of what recording an image's config and
// manifest costs. A blob store older than that takes the message as an
// upload committed at once. Either answers with the committed blob last.
func (c *Client) putWhole(ctx context.Context, b []byte, d digest.Digest, size int64, cfg writerConfig) (Info, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Write(ctx, grpc.ForceCodecV2(c.codec))
	if err != nil {
		return Info{}, err
	}
	req := &blobv1.WriteRequest{Ref: cfg.ref, Digest: string(d), Size: &size, MediaType: cfg.mediaType, Commit: true}
	// On io.EOF the server ended the stream: Recv below says why.
	if err := stream.SendMsg(&blobwire.Bulk{Msg: req, Data: mem.BufferSlice{mem.SliceBuffer(b)}}); err != nil && !errors.Is(err, io.EOF) {
		return Info{}, err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return Info{}, errdefs.Internal("upload %q: the server ended the stream without committing", cfg.ref)
		}
		if err != nil {
			return Info{}, err
		}
		if resp.GetCommitted() {
			return infoFrom(resp.GetBlob()), nil
		}
	}
}

func (c *Client) putOnce(ctx context.Context, r io.Reader, seeker io.Seeker, d digest.Digest, size int64, opts []WriterOption) (Info, error) {
	w, err := c.NewWriter(ctx, d, size, opts...)
	if err != nil {
		return Info{}, err
	}
	defer w.Close()
	if w.Exists() {
		return w.Commit(ctx)
	}
	if w.Offset() != 0 {
		if seeker == nil {
			return Info{}, errdefs.FailedPrecondition("upload %q holds %d bytes already and the input cannot seek there", w.Ref(), w.Offset())
		}
	}
	if seeker != nil {
		if _, err := seeker.Seek(w.Offset(), io.SeekStart); err != nil {
			return Info{}, fmt.Errorf("upload %q: seeking to %d: %w", w.Ref(), w.Offset(), err)
		}
	}
	if _, err := io.Copy(w, r); err != nil {
		return Info{}, err
	}
	return w.Commit(ctx)
}

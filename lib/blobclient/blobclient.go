// Package blobclient is the Go client of Strata's blob store
// (strata.blob.v1.BlobService), used by the other services and the CLI.
//
// Errors are lib/errdefs errors (the connection's interceptors from
// lib/grpcclient convert them): test them with errdefs.IsNotFound and the
// like. A conn made otherwise still works, but its errors are plain gRPC
// statuses.
package blobclient

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobwire"
	"github.com/strata-build/strata/lib/errdefs"
)

// MaxExists is the most digests one Exists call to the server carries;
// Client.Exists splits longer lists.
const MaxExists = 10000

// Client calls a blob store.
type Client struct {
	api   blobv1.BlobServiceClient
	codec blobwire.Codec // for the calls that carry blob bytes
	bufs  *blobwire.Pool // of ChunkSize, for upload messages
}

// New returns a client over conn, normally from lib/grpcclient.Dial.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{api: blobv1.NewBlobServiceClient(conn), codec: blobwire.NewCodec(), bufs: blobwire.NewPool(ChunkSize)}
}

// Info describes a stored blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	CreatedAt time.Time
}

// Upload describes an unfinished upload.
type Upload struct {
	Ref string
	// Digest is the declared digest; empty when it is to come at commit.
	Digest digest.Digest
	// Size is the declared size, or -1 when unknown.
	Size int64
	// Offset is how many bytes the server holds: a resumed upload continues
	// from here.
	Offset               int64
	StartedAt, UpdatedAt time.Time
}

func infoFrom(b *blobv1.BlobInfo) Info {
	return Info{Digest: digest.Digest(b.GetDigest()), Size: b.GetSize(), CreatedAt: b.GetCreatedAt().AsTime()}
}

func uploadFrom(u *blobv1.Upload) Upload {
	return Upload{
		Ref: u.GetRef(), Digest: digest.Digest(u.GetDigest()), Size: u.GetSize(), Offset: u.GetOffset(),
		StartedAt: u.GetStartedAt().AsTime(), UpdatedAt: u.GetUpdatedAt().AsTime(),
	}
}

// Stat describes a stored blob; ErrNotFound when it is not stored.
func (c *Client) Stat(ctx context.Context, d digest.Digest) (Info, error) {
	resp, err := c.api.Stat(ctx, &blobv1.StatRequest{Digest: string(d)})
	if err != nil {
		return Info{}, err
	}
	return infoFrom(resp.GetBlob()), nil
}

// Exists returns the stored blobs among ds, keyed by digest; a digest absent
// from the map is not stored. Long lists take several calls.
func (c *Client) Exists(ctx context.Context, ds []digest.Digest) (map[digest.Digest]Info, error) {
	found := make(map[digest.Digest]Info, len(ds))
	for len(ds) > 0 {
		n := min(len(ds), MaxExists)
		req := &blobv1.ExistsRequest{Digests: make([]string, n)}
		for i, d := range ds[:n] {
			req.Digests[i] = string(d)
		}
		resp, err := c.api.Exists(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, b := range resp.GetFound() {
			found[digest.Digest(b.GetDigest())] = infoFrom(b)
		}
		ds = ds[n:]
	}
	return found, nil
}

// Delete removes a blob; ErrNotFound when it is not stored.
func (c *Client) Delete(ctx context.Context, d digest.Digest) error {
	_, err := c.api.Delete(ctx, &blobv1.DeleteRequest{Digest: string(d)})
	return err
}

// List returns one page of blobs in digest order and the token of the next
// page ("" after the last). pageSize 0 means the server's default (1,000).
func (c *Client) List(ctx context.Context, pageSize int, pageToken string) ([]Info, string, error) {
	resp, err := c.api.List(ctx, &blobv1.ListRequest{PageSize: int32(pageSize), PageToken: pageToken})
	if err != nil {
		return nil, "", err
	}
	out := make([]Info, len(resp.GetBlobs()))
	for i, b := range resp.GetBlobs() {
		out[i] = infoFrom(b)
	}
	return out, resp.GetNextPageToken(), nil
}

// All iterates over every stored blob in digest order, a page at a time.
// Iteration stops at the first error, which it yields.
func (c *Client) All(ctx context.Context) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		token := ""
		for {
			page, next, err := c.List(ctx, 0, token)
			if err != nil {
				yield(Info{}, err)
				return
			}
			for _, i := range page {
				if !yield(i, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			token = next
		}
	}
}

// UploadStatus describes the unfinished upload under ref; ErrNotFound when
// there is none.
func (c *Client) UploadStatus(ctx context.Context, ref string) (Upload, error) {
	resp, err := c.api.UploadStatus(ctx, &blobv1.UploadStatusRequest{Ref: ref})
	if err != nil {
		return Upload{}, err
	}
	return uploadFrom(resp.GetUpload()), nil
}

// AbortUpload discards the unfinished upload under ref.
func (c *Client) AbortUpload(ctx context.Context, ref string) error {
	_, err := c.api.AbortUpload(ctx, &blobv1.AbortUploadRequest{Ref: ref})
	return err
}

// Uploads returns every unfinished upload, oldest first.
func (c *Client) Uploads(ctx context.Context) ([]Upload, error) {
	var out []Upload
	token := ""
	for {
		resp, err := c.api.ListUploads(ctx, &blobv1.ListUploadsRequest{PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, u := range resp.GetUploads() {
			out = append(out, uploadFrom(u))
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// Checked is what Verify found of one blob.
type Checked struct {
	Digest digest.Digest
	State  blobv1.BlobState
	// Size is the blob's size as committed (0 when it is missing).
	Size int64
	// Problem says what is wrong with a damaged blob.
	Problem string
}

// Verify has the server re-read blobs and check that their bytes still hash
// to their digests: ds, or every stored blob when ds is empty (a scrub),
// yielding each as it is checked. When the server becomes unavailable on
// the way (a replica restarting), the check resumes after the last blob
// yielded, a few times. Iteration stops at the first other error, which it
// yields.
func (c *Client) Verify(ctx context.Context, ds []digest.Digest) iter.Seq2[Checked, error] {
	return func(yield func(Checked, error) bool) {
		named := len(ds) > 0
		var after digest.Digest
		backoff := 200 * time.Millisecond
		for attempt := 1; ; attempt++ {
			req := &blobv1.VerifyRequest{Digests: make([]string, len(ds)), After: string(after)}
			for i, d := range ds {
				req.Digests[i] = string(d)
			}
			stream, err := c.api.Verify(ctx, req)
			for err == nil {
				var resp *blobv1.VerifyResponse
				if resp, err = stream.Recv(); err != nil {
					break
				}
				checked := Checked{Digest: digest.Digest(resp.GetDigest()), State: resp.GetState(), Size: resp.GetSize(), Problem: resp.GetProblem()}
				if !yield(checked, nil) {
					return
				}
				if named {
					ds = ds[1:]
				} else {
					after = checked.Digest
				}
				attempt = 0
			}
			if errors.Is(err, io.EOF) || named && len(ds) == 0 {
				return
			}
			if !retryable(err) || attempt >= verifyAttempts || ctx.Err() != nil {
				yield(Checked{}, err)
				return
			}
			select {
			case <-ctx.Done():
				yield(Checked{}, ctx.Err())
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// verifyAttempts is how many times in a row Verify tries a server that is
// unavailable before it gives up.
const verifyAttempts = 5

// Reader reads a blob, or a range of it, as the server streams it.
type Reader struct {
	stream blobv1.BlobService_ReadClient
	cancel context.CancelFunc
	size   int64
	offset int64           // of the next byte Read returns
	bufs   mem.BufferSlice // the received bytes not yet read, as gRPC's buffers
	off    int             // of the next byte in bufs[0]
	err    error
	pool   *blobwire.Pool // of ChunkSize, for WriteTo
}

// ReadOption configures Open.
type ReadOption func(*blobv1.ReadRequest)

// Unverified asks the server not to check a whole blob against its digest
// as it serves it. Only for a caller whose own reader checks the bytes
// against the digest (a registry client pulling a blob): a damaged blob
// is then caught there, not by the blob store. Ranges are never checked.
func Unverified() ReadOption { return func(r *blobv1.ReadRequest) { r.Unverified = true } }

// Open starts reading length bytes (0: up to the end) of a blob from offset.
// It returns ErrNotFound at once when the blob is not stored. A whole blob
// is checked against its digest as it is read (the last Read fails with
// ErrDataLoss when it is damaged), unless opts say Unverified.
func (c *Client) Open(ctx context.Context, d digest.Digest, offset, length int64, opts ...ReadOption) (*Reader, error) {
	req := &blobv1.ReadRequest{Digest: string(d), Offset: offset, Length: length}
	for _, o := range opts {
		o(req)
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.api.Read(ctx, req, grpc.ForceCodecV2(c.codec))
	if err != nil {
		cancel()
		return nil, err
	}
	first := blobwire.Bulk{Msg: &blobv1.ReadResponse{}}
	if err := stream.RecvMsg(&first); err != nil {
		cancel()
		if errors.Is(err, io.EOF) {
			err = errdefs.Internal("reading %s: the server sent nothing", d)
		}
		return nil, err
	}
	resp := first.Msg.(*blobv1.ReadResponse)
	if resp.GetOffset() != offset {
		first.Data.Free()
		cancel()
		return nil, errdefs.Internal("reading %s: asked for offset %d, got %d", d, offset, resp.GetOffset())
	}
	return &Reader{stream: stream, cancel: cancel, size: resp.GetSize(), offset: offset, bufs: first.Data, pool: c.bufs}, nil
}

// Size is the blob's total size (not the range's).
func (r *Reader) Size() int64 { return r.size }

// next receives the next message's bytes once those held are all read; it
// reports false, with r.err set, at the end of the stream or on failure.
func (r *Reader) next() bool {
	for len(r.bufs) == 0 {
		if r.err != nil {
			return false
		}
		msg := blobwire.Bulk{Msg: &blobv1.ReadResponse{}}
		if err := r.stream.RecvMsg(&msg); err != nil {
			r.err = err
			continue
		}
		if got := msg.Msg.(*blobv1.ReadResponse).GetOffset(); got != r.offset {
			msg.Data.Free()
			r.err = errdefs.Internal("reading a blob: expected bytes at offset %d, got %d", r.offset, got)
			continue
		}
		r.bufs, r.off = msg.Data, 0
	}
	return true
}

// consume marks n bytes of bufs[0] read, freeing it when all are.
func (r *Reader) consume(n int) {
	r.off += n
	r.offset += int64(n)
	if r.off == r.bufs[0].Len() {
		r.bufs[0].Free()
		r.bufs[0] = nil
		r.bufs, r.off = r.bufs[1:], 0
	}
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !r.next() {
		return 0, r.err
	}
	return r.gather(p), nil
}

// WriteTo implements io.WriterTo. gRPC hands a message's bytes over in the
// buffers of the HTTP/2 frames that carried them, 16 KiB each, and writing
// each to w is a system call per frame when w is a connection (the
// registry's response) or a file. On loopback, 16 KiB writes to a socket
// took twice the system time of 1 MiB writes, more than copying the bytes
// once costs. So a message's buffers are gathered into one write. After a
// failed write the reader is spent: the bytes gathered for it are gone.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	bp := r.pool.Get(ChunkSize)
	defer r.pool.Put(bp)
	var total int64
	for r.next() {
		n, err := w.Write((*bp)[:r.gather(*bp)])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	if errors.Is(r.err, io.EOF) {
		return total, nil
	}
	return total, r.err
}

// gather copies the held bytes into p, as many as fit, consuming them.
func (r *Reader) gather(p []byte) int {
	n := 0
	for n < len(p) && len(r.bufs) > 0 {
		k := copy(p[n:], r.bufs[0].ReadOnlyData()[r.off:])
		n += k
		r.consume(k)
	}
	return n
}

// Close ends the read; the rest of the stream is dropped.
func (r *Reader) Close() error {
	r.cancel()
	r.bufs.Free()
	r.bufs = nil
	return nil
}

// DialOptions are the options of a connection that carries blobs in bulk:
// buffers and flow-control windows of a few MiB, so that a stream of 1 MiB
// messages is not cut into many small writes and window updates, and
// gRPC buffers that are not cleared before each use (blobwire.TieredPool).
// Pass them to lib/grpcclient.Dial.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithReadBufferSize(BufferSize), grpc.WithWriteBufferSize(BufferSize),
		grpc.WithInitialWindowSize(WindowSize), grpc.WithInitialConnWindowSize(2 * WindowSize),
		experimental.WithBufferPool(blobwire.NewTieredPool()),
	}
}

// ServerOptions are DialOptions' counterpart for a blob store's server:
// the buffers, and lib/blobwire's codec, which keeps blob bytes in gRPC's
// buffers for the server's messages of type blobwire.Bulk. Its receive
// windows stay gRPC's adaptive ones, since data a window lets in waits in
// the server's memory, which is bounded.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ReadBufferSize(BufferSize), grpc.WriteBufferSize(BufferSize),
		grpc.ForceServerCodecV2(blobwire.NewCodec()),
		experimental.BufferPool(blobwire.NewTieredPool()),
	}
}

// BufferSize and WindowSize are the sizes DialOptions and ServerOptions set.
const (
	BufferSize = 1 << 20
	WindowSize = 8 << 20
)

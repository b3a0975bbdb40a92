// Package server adapts a blob.Store to strata.blob.v1.BlobService. It only
// converts: the store decides, and the grpcserver interceptors map errors to
// gRPC codes.
package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/timestamppb"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobwire"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

const (
	// DefaultChunkSize is the size of Read's messages.
	DefaultChunkSize = 1 << 20
	defaultPageSize  = 1000
	maxPageSize      = 10000
	maxExists        = 10000
	maxVerify        = 10000
	// statConcurrency bounds the Stat calls of one Exists (HEAD requests on S3).
	statConcurrency = 16
)

// Server is the BlobService over a Store.
type Server struct {
	blobv1.UnimplementedBlobServiceServer

	store     blob.Store
	metrics   *Metrics
	chunkSize int
	bufs      *blobwire.Pool // of chunkSize, for Read's messages
}

// New returns a server over store, counting into metrics (nil: not counted).
// Register it on a gRPC server made with lib/blobclient.ServerOptions(),
// whose codec reads and writes the blobwire.Bulk messages it uses.
func New(store blob.Store, metrics *Metrics) *Server {
	s := &Server{store: store, metrics: metrics, chunkSize: DefaultChunkSize}
	s.bufs = blobwire.NewPool(s.chunkSize)
	return s
}

// backend notes an error the store returned and passes it on.
func (s *Server) backend(op string, err error) error {
	if err != nil && s.metrics != nil {
		s.metrics.backendError(op, err)
	}
	return err
}

func infoPB(i blob.Info) *blobv1.BlobInfo {
	return &blobv1.BlobInfo{Digest: string(i.Digest), Size: i.Size, CreatedAt: timestamppb.New(i.CreatedAt)}
}

func uploadPB(u blob.Upload) *blobv1.Upload {
	return &blobv1.Upload{
		Ref: u.Ref, Digest: string(u.Expected), Size: u.Size, Offset: u.Offset,
		StartedAt: timestamppb.New(u.StartedAt), UpdatedAt: timestamppb.New(u.UpdatedAt),
	}
}

// recvWrite receives the next WriteRequest, its data left in gRPC's
// buffers (blobwire.Bulk): the caller must free them.
func recvWrite(stream blobv1.BlobService_WriteServer) (*blobv1.WriteRequest, mem.BufferSlice, error) {
	msg := blobwire.Bulk{Msg: &blobv1.WriteRequest{}}
	if err := stream.RecvMsg(&msg); err != nil {
		return nil, nil, err
	}
	return msg.Msg.(*blobv1.WriteRequest), msg.Data, nil
}

// Write implements BlobService.Write; see the proto for the protocol.
func (s *Server) Write(stream blobv1.BlobService_WriteServer) error {
	ctx := stream.Context()
	start := time.Now()
	first, data, err := recvWrite(stream)
	if err != nil {
		return err
	}
	defer func() { data.Free() }()
	opts := blob.WriterOptions{Ref: first.GetRef(), Size: -1, MediaType: first.GetMediaType(), ResumeOnly: first.GetResumeOnly()}
	if first.Size != nil {
		opts.Size = first.GetSize()
	}
	if err := blob.ValidateRef(opts.Ref); err != nil {
		return err
	}
	if first.GetDigest() != "" {
		if opts.Expected, err = blob.ParseDigest(first.GetDigest()); err != nil {
			return err
		}
		// A stored blob needs no bytes: say so before opening an upload.
		info, err := s.store.Stat(ctx, opts.Expected)
		switch {
		case err == nil:
			return s.writeExisting(stream, opts, info, first, &data)
		case !errdefs.IsNotFound(err):
			return s.backend("stat", err)
		}
		if oneShot(first, opts, data) {
			return s.writeOnce(stream, start, opts, data)
		}
	}
	w, err := s.store.NewWriter(ctx, opts)
	if err != nil {
		return s.backend("write", err)
	}
	defer w.Close()
	if err := stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Offset: w.Offset()}); err != nil {
		return err
	}
	info, err := s.receive(stream, w, opts, first, &data)
	if errors.Is(err, errPaused) {
		return s.pause(stream, w, opts)
	}
	if err != nil {
		return err
	}
	if s.metrics != nil {
		s.metrics.uploadDuration.Observe(time.Since(start).Seconds())
	}
	return stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Offset: info.Size, Committed: true, Blob: infoPB(info)})
}

// maxOneShot is the largest blob a Write stores in one step (Store.Put)
// when its first message carries all of it: such a blob is in memory
// whole already, as that message, and on S3 one PutObject replaces an
// upload's five requests (its state read, claimed and removed; an
// existence check; the object), most of the cost of the small blobs every
// image records (its config and manifest, a few KiB). Up to here the
// extra copy of the bytes that Put may take stays small per Write; a
// larger blob goes through an upload, whose memory is bounded in parts.
const maxOneShot = 1 << 20

// oneShot reports whether the first request of a Write that declares its
// digest carries the whole blob with the commit: no pause, no resume, from
// offset 0, and the declared size (all its data when the size is
// unknown), small enough for Store.Put.
func oneShot(first *blobv1.WriteRequest, opts blob.WriterOptions, data mem.BufferSlice) bool {
	n := int64(data.Len())
	return first.GetCommit() && !first.GetPause() && !opts.ResumeOnly && first.GetOffset() == 0 &&
		n <= maxOneShot && (opts.Size == -1 || opts.Size == n)
}

// writeOnce answers a oneShot Write as an upload committed at once would
// be answered, storing the blob with Store.Put. An upload held under the
// same ref (an older, interrupted one) is not touched: the janitor
// discards it once it is idle.
func (s *Server) writeOnce(stream blobv1.BlobService_WriteServer, start time.Time, opts blob.WriterOptions, data mem.BufferSlice) error {
	if err := stream.Send(&blobv1.WriteResponse{Ref: opts.Ref}); err != nil {
		return err
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData() // held until Write frees data
	} else {
		b = data.Materialize()
	}
	if s.metrics != nil {
		s.metrics.bytesIn.Add(float64(len(b)))
	}
	info, err := s.store.Put(stream.Context(), opts.Expected, opts.MediaType, b)
	if err != nil {
		return s.backend("commit", err)
	}
	if s.metrics != nil {
		s.metrics.uploadDuration.Observe(time.Since(start).Seconds())
	}
	return stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Offset: info.Size, Committed: true, Blob: infoPB(info)})
}

// errPaused is receive's answer to a request with pause set.
var errPaused = errors.New("paused")

// pause ends a Write whose client asked for it (errPaused): the upload's
// bytes are kept and the offset they reach is the last response.
func (s *Server) pause(stream blobv1.BlobService_WriteServer, w blob.Writer, opts blob.WriterOptions) error {
	if err := w.Close(); err != nil {
		return s.backend("write", err)
	}
	return stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Offset: w.Offset()})
}

// receive feeds the stream's data to w until a commit, or a pause
// (errPaused); req is the first message, which may carry data (*data) and
// the commit or pause too. *data is the latest message's data, which the
// caller frees.
func (s *Server) receive(stream blobv1.BlobService_WriteServer, w blob.Writer, opts blob.WriterOptions, req *blobv1.WriteRequest, data *mem.BufferSlice) (blob.Info, error) {
	ctx := stream.Context()
	for {
		if data.Len() > 0 {
			if req.GetOffset() != w.Offset() {
				return blob.Info{}, errdefs.FailedPrecondition("upload %q: data at offset %d, but the server holds %d bytes: continue from %d",
					opts.Ref, req.GetOffset(), w.Offset(), w.Offset()).WithReason("OFFSET_MISMATCH")
			}
			n, err := writeBuffers(w, *data)
			if s.metrics != nil {
				s.metrics.bytesIn.Add(float64(n))
			}
			if err != nil {
				return blob.Info{}, s.backend("write", err)
			}
		}
		data.Free()
		*data = nil
		if req.GetPause() {
			if req.GetCommit() {
				return blob.Info{}, errdefs.InvalidArgument("upload %q: a request may not both pause and commit", opts.Ref)
			}
			return blob.Info{}, errPaused
		}
		if req.GetCommit() {
			atCommit := digest.Digest(req.GetDigest())
			info, err := w.Commit(ctx, atCommit)
			if errdefs.IsAlreadyExists(err) {
				// Another writer stored the same bytes first: that is success.
				d, _ := blob.CommitDigest(opts.Expected, atCommit)
				info, err = s.store.Stat(ctx, d)
			}
			return info, s.backend("commit", err)
		}
		var err error
		req, *data, err = recvWrite(stream)
		if errors.Is(err, io.EOF) {
			return blob.Info{}, errdefs.FailedPrecondition("upload %q: the stream ended without a commit; %d bytes are kept for a resume",
				opts.Ref, w.Offset()).WithReason("NO_COMMIT")
		}
		if err != nil {
			return blob.Info{}, err
		}
	}
}

// writeBuffers writes each of bufs to w, in order.
func writeBuffers(w io.Writer, bufs mem.BufferSlice) (int64, error) {
	var total int64
	for _, b := range bufs {
		n, err := w.Write(b.ReadOnlyData())
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// writeExisting answers a Write whose blob is already stored. The client may
// commit at once; if it sends data anyway, the data is checked like any
// upload's and the stored blob stays.
func (s *Server) writeExisting(stream blobv1.BlobService_WriteServer, opts blob.WriterOptions, info blob.Info, req *blobv1.WriteRequest, data *mem.BufferSlice) error {
	if opts.Size >= 0 && opts.Size != info.Size {
		return blob.SizeMismatch(info.Digest, opts.Size, info.Size)
	}
	if err := stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Exists: true, Blob: infoPB(info)}); err != nil {
		return err
	}
	if data.Len() > 0 && oneShot(req, opts, *data) {
		// The whole blob came with the commit: it is checked here, as an
		// upload would check it, with nothing to store.
		if s.metrics != nil {
			s.metrics.bytesIn.Add(float64(data.Len()))
		}
		h := opts.Expected.Algorithm().Hash()
		for _, b := range *data {
			h.Write(b.ReadOnlyData())
		}
		if err := blob.Verify(opts.Expected, info.Size, digest.NewDigest(opts.Expected.Algorithm(), h), int64(data.Len())); err != nil {
			return err
		}
		return stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Offset: info.Size, Exists: true, Committed: true, Blob: infoPB(info)})
	}
	for data.Len() == 0 && !req.GetCommit() && !req.GetPause() {
		var err error
		if req, *data, err = recvWrite(stream); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the client learned what it needed
			}
			return err
		}
	}
	if data.Len() > 0 {
		w, err := s.store.NewWriter(stream.Context(), opts)
		if err != nil {
			return s.backend("write", err)
		}
		defer w.Close()
		info, err = s.receive(stream, w, opts, req, data)
		if errors.Is(err, errPaused) {
			return s.pause(stream, w, opts)
		}
		if err != nil {
			return err
		}
	} else if req.GetPause() {
		return stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Exists: true, Blob: infoPB(info)})
	}
	return stream.Send(&blobv1.WriteResponse{Ref: opts.Ref, Offset: info.Size, Exists: true, Committed: true, Blob: infoPB(info)})
}

// Read implements BlobService.Read.
func (s *Server) Read(req *blobv1.ReadRequest, stream blobv1.BlobService_ReadServer) error {
	ctx := stream.Context()
	start := time.Now()
	d, err := blob.ParseDigest(req.GetDigest())
	if err != nil {
		return err
	}
	rc, info, err := s.store.Open(ctx, d, req.GetOffset(), req.GetLength())
	if err != nil {
		return s.backend("read", err)
	}
	defer rc.Close()
	// A whole blob's bytes are checked against its digest (blob.Verified),
	// unless the caller checks them itself (unverified). The hash, the
	// biggest cost per byte of a read, runs in a goroutine of its own
	// beside the reading and the sending rather than inside the backend's
	// reader, in turn with them; the stream still ends with DATA_LOSS,
	// after the last bytes, when they are not the blob's.
	src := io.Reader(rc)
	var check *hashCheck
	if r, vd, size, ok := blob.Unverified(rc); ok {
		src = r
		if !req.GetUnverified() {
			check = newHashCheck(vd, size)
			defer check.stop()
		}
	}
	// A reader goroutine fills the next chunks while this one sends, so that
	// the backend and the client are both kept busy.
	chunks := make(chan chunk, readAhead)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.readChunks(rctx, src, chunks)
	offset, first := req.GetOffset(), true
	for c := range chunks {
		if c.err != nil {
			return s.backend("read", fmt.Errorf("reading %s at %d: %w", d, offset, c.err))
		}
		if n := c.data.Len(); n > 0 || first {
			resp := &blobv1.ReadResponse{Offset: offset}
			if first {
				resp.Size = info.Size
			}
			// gRPC writes the chunk out from its buffer, which goes back
			// to its pool once it is on the wire and hashed.
			data := mem.BufferSlice{c.data}
			if check != nil && n > 0 {
				data[0].Ref()
				check.add(data[0])
			}
			err := stream.SendMsg(&blobwire.Bulk{Msg: resp, Data: data})
			data.Free()
			offset += int64(n)
			if err != nil {
				return err
			}
			if s.metrics != nil {
				s.metrics.bytesOut.Add(float64(n))
			}
			first = false
		} else {
			c.data.Free()
		}
	}
	if check != nil {
		if err := check.result(); err != nil {
			return s.backend("read", fmt.Errorf("reading %s at %d: %w", d, offset, err))
		}
	}
	if s.metrics != nil {
		s.metrics.downloadDuration.Observe(time.Since(start).Seconds())
	}
	return nil
}

// hashCheck hashes a whole blob's bytes, handed to it in order, in a
// goroutine of its own, and checks them against the blob's digest and size.
type hashCheck struct {
	in   chan mem.Buffer
	done chan error
}

// hashAhead is how many chunks may wait to be hashed: the sending stops
// when the hash falls that far behind.
const hashAhead = 4

func newHashCheck(d digest.Digest, size int64) *hashCheck {
	in, done := make(chan mem.Buffer, hashAhead), make(chan error, 1)
	go func() {
		h := d.Algorithm().Hash()
		var n int64
		for b := range in {
			h.Write(b.ReadOnlyData())
			n += int64(b.Len())
			b.Free()
		}
		var err error
		if actual := digest.NewDigest(d.Algorithm(), h); n != size || actual != d {
			err = blob.Damaged(d, size, n, actual)
		}
		done <- err
	}()
	return &hashCheck{in: in, done: done}
}

// add hands over the next bytes and the caller's reference to them.
func (c *hashCheck) add(b mem.Buffer) { c.in <- b }

// result waits for the hash of every byte handed over and reports
// ErrDataLoss when they are not the blob's.
func (c *hashCheck) result() error {
	close(c.in)
	c.in = nil
	return <-c.done
}

// stop ends the hashing of a read that ended early, freeing what waits.
func (c *hashCheck) stop() {
	if c.in != nil {
		close(c.in)
		c.in = nil
		<-c.done
	}
}

// readAhead is how many chunks a Read holds ready beyond the one it sends.
const readAhead = 2

// chunk is the next bytes of a read, or its failure.
type chunk struct {
	data mem.Buffer
	err  error
}

// readChunks reads r in chunks until its end, an error or ctx's end. The
// last chunk may be short; an empty blob gives one empty chunk. A
// blob.BufferReader hands over its own buffers, which are sent as they
// are; other readers are copied into the server's.
func (s *Server) readChunks(ctx context.Context, r io.Reader, out chan<- chunk) {
	defer close(out)
	br, direct := r.(blob.BufferReader)
	for sent := false; ; sent = true {
		var c chunk
		var err error
		if direct {
			c.data, err = br.ReadBuffer(s.chunkSize)
			if c.data == nil {
				c.data = mem.SliceBuffer(nil) // the end: an empty chunk
			}
		} else {
			bp := s.bufs.Get(s.chunkSize)
			var n int
			n, err = io.ReadFull(r, *bp)
			c.data = s.bufs.Buffer(bp, n)
		}
		end := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !end {
			c.data.Free()
			c = chunk{err: err}
		}
		if c.err != nil || c.data.Len() > 0 || !sent {
			select {
			case out <- c:
			case <-ctx.Done():
				if c.data != nil {
					c.data.Free()
				}
				return
			}
		} else {
			c.data.Free()
		}
		if end || c.err != nil {
			return
		}
	}
}

// Stat implements BlobService.Stat.
func (s *Server) Stat(ctx context.Context, req *blobv1.StatRequest) (*blobv1.StatResponse, error) {
	d, err := blob.ParseDigest(req.GetDigest())
	if err != nil {
		return nil, err
	}
	info, err := s.store.Stat(ctx, d)
	if err != nil {
		return nil, s.backend("stat", err)
	}
	return &blobv1.StatResponse{Blob: infoPB(info)}, nil
}

// Exists implements BlobService.Exists.
func (s *Server) Exists(ctx context.Context, req *blobv1.ExistsRequest) (*blobv1.ExistsResponse, error) {
	if n := len(req.GetDigests()); n > maxExists {
		return nil, errdefs.InvalidArgument("%d digests asked for at once; at most %d", n, maxExists)
	}
	ds := make([]digest.Digest, len(req.GetDigests()))
	for i, raw := range req.GetDigests() {
		d, err := blob.ParseDigest(raw)
		if err != nil {
			return nil, err
		}
		ds[i] = d
	}
	infos := make([]*blob.Info, len(ds))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statConcurrency)
	for i, d := range ds {
		g.Go(func() error {
			info, err := s.store.Stat(gctx, d)
			if errdefs.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return s.backend("stat", err)
			}
			infos[i] = &info
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	resp := &blobv1.ExistsResponse{}
	for i, info := range infos {
		if info != nil {
			resp.Found = append(resp.Found, infoPB(*info))
		} else {
			resp.Missing = append(resp.Missing, string(ds[i]))
		}
	}
	return resp, nil
}

// Delete implements BlobService.Delete.
func (s *Server) Delete(ctx context.Context, req *blobv1.DeleteRequest) (*blobv1.DeleteResponse, error) {
	d, err := blob.ParseDigest(req.GetDigest())
	if err != nil {
		return nil, err
	}
	if err := s.store.Delete(ctx, d); err != nil {
		return nil, s.backend("delete", err)
	}
	return &blobv1.DeleteResponse{}, nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, errdefs.InvalidArgument("invalid page_size %d: must not be negative", n)
	case n == 0:
		return defaultPageSize, nil
	}
	return min(int(n), maxPageSize), nil
}

// List implements BlobService.List. The page token is the last digest of the
// previous page, so pages stay in order while blobs come and go.
func (s *Server) List(ctx context.Context, req *blobv1.ListRequest) (*blobv1.ListResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after digest.Digest
	if tok := req.GetPageToken(); tok != "" {
		if after, err = blob.ParseDigest(tok); err != nil {
			return nil, errdefs.InvalidArgument("invalid page_token %q: not from a previous List", tok)
		}
	}
	infos, err := s.store.List(ctx, after, size+1)
	if err != nil {
		return nil, s.backend("list", err)
	}
	resp := &blobv1.ListResponse{}
	if len(infos) > size {
		infos = infos[:size]
		resp.NextPageToken = string(infos[size-1].Digest)
	}
	for _, i := range infos {
		resp.Blobs = append(resp.Blobs, infoPB(i))
	}
	return resp, nil
}

// UploadStatus implements BlobService.UploadStatus.
func (s *Server) UploadStatus(ctx context.Context, req *blobv1.UploadStatusRequest) (*blobv1.UploadStatusResponse, error) {
	u, err := s.store.Upload(ctx, req.GetRef())
	if err != nil {
		return nil, s.backend("upload_status", err)
	}
	return &blobv1.UploadStatusResponse{Upload: uploadPB(u)}, nil
}

// AbortUpload implements BlobService.AbortUpload.
func (s *Server) AbortUpload(ctx context.Context, req *blobv1.AbortUploadRequest) (*blobv1.AbortUploadResponse, error) {
	if err := s.store.Abort(ctx, req.GetRef()); err != nil {
		return nil, s.backend("abort", err)
	}
	return &blobv1.AbortUploadResponse{}, nil
}

// ListUploads implements BlobService.ListUploads: oldest first, the page
// token naming the last upload of the previous page by start time and ref.
func (s *Server) ListUploads(ctx context.Context, req *blobv1.ListUploadsRequest) (*blobv1.ListUploadsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	ups, err := s.store.Uploads(ctx)
	if err != nil {
		return nil, s.backend("list_uploads", err)
	}
	slices.SortFunc(ups, compareUploads)
	if tok := req.GetPageToken(); tok != "" {
		last, err := decodeUploadToken(tok)
		if err != nil {
			return nil, err
		}
		i, _ := slices.BinarySearchFunc(ups, last, compareUploads)
		for i < len(ups) && compareUploads(ups[i], last) <= 0 {
			i++
		}
		ups = ups[i:]
	}
	resp := &blobv1.ListUploadsResponse{}
	if len(ups) > size {
		ups = ups[:size]
		resp.NextPageToken = encodeUploadToken(ups[size-1])
	}
	for _, u := range ups {
		resp.Uploads = append(resp.Uploads, uploadPB(u))
	}
	return resp, nil
}

func compareUploads(a, b blob.Upload) int {
	if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
		return c
	}
	return strings.Compare(a.Ref, b.Ref)
}

func encodeUploadToken(u blob.Upload) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(u.StartedAt.UnixNano(), 10) + "/" + u.Ref))
}

func decodeUploadToken(tok string) (blob.Upload, error) {
	bad := errdefs.InvalidArgument("invalid page_token %q: not from a previous ListUploads", tok)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return blob.Upload{}, bad
	}
	ns, ref, ok := strings.Cut(string(raw), "/")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return blob.Upload{}, bad
	}
	return blob.Upload{Ref: ref, StartedAt: time.Unix(0, n)}, nil
}

// Verify implements BlobService.Verify: each blob is read whole, which
// checks it (blob.Check); a damaged or missing one is reported, and only a
// storage that cannot be read ends the call.
func (s *Server) Verify(req *blobv1.VerifyRequest, stream blobv1.BlobService_VerifyServer) error {
	ctx := stream.Context()
	if n := len(req.GetDigests()); n > maxVerify {
		return errdefs.InvalidArgument("%d digests asked for at once; at most %d", n, maxVerify)
	}
	ds := make([]digest.Digest, len(req.GetDigests()))
	for i, raw := range req.GetDigests() {
		d, err := blob.ParseDigest(raw)
		if err != nil {
			return err
		}
		ds[i] = d
	}
	check := func(d digest.Digest) error {
		info, err := blob.Check(ctx, s.store, d)
		resp := &blobv1.VerifyResponse{Digest: string(d), State: blobv1.BlobState_BLOB_STATE_INTACT, Size: info.Size}
		switch {
		case errdefs.IsDataLoss(err):
			s.backend("verify", err)
			resp.State, resp.Problem = blobv1.BlobState_BLOB_STATE_DAMAGED, err.Error()
		case errdefs.IsNotFound(err):
			resp.State, resp.Size = blobv1.BlobState_BLOB_STATE_MISSING, 0
		case err != nil:
			return s.backend("verify", err)
		}
		return stream.Send(resp)
	}
	if len(ds) > 0 {
		for _, d := range ds {
			if err := check(d); err != nil {
				return err
			}
		}
		return nil
	}
	var after digest.Digest
	if raw := req.GetAfter(); raw != "" {
		var err error
		if after, err = blob.ParseDigest(raw); err != nil {
			return err
		}
	}
	for {
		page, err := s.store.List(ctx, after, defaultPageSize)
		if err != nil {
			return s.backend("list", err)
		}
		for _, info := range page {
			if err := check(info.Digest); err != nil {
				return err
			}
		}
		if len(page) < defaultPageSize {
			return nil
		}
		after = page[len(page)-1].Digest
	}
}

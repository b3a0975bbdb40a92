package s3blob

import (
	"bytes"
	"context"
	"encoding"
	"hash"
	"slices"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// partOptions skip minio-go's SHA-256 of each part's payload: the writer
// hashes every byte for the blob's digest already, which the commit checks,
// and the parts still carry a CRC32C checksum.
var partOptions = minio.PutObjectPartOptions{DisableContentSha256: true}

// stateTimeout bounds the clean-up a writer does after its caller's context
// ended.
const stateTimeout = 30 * time.Second

// writer receives a blob in the caller's goroutine, hashing as bytes come,
// and cuts it into parts that an uploader goroutine sends to S3, at most
// Concurrency at once. Write blocks while that many are in flight, which
// bounds memory to about (Concurrency+1) parts.
type writer struct {
	s        *Store
	st       *state    // Parts, Offset, Hash and UpdatedAt change under mu
	h        hash.Hash // of every byte received
	offset   int64     // bytes received
	buf      []byte    // the part being filled
	nextPart int

	jobs     chan job      // to the uploader
	tokens   chan struct{} // one per part in flight
	parts    sync.WaitGroup
	finished chan struct{} // closed when the uploader has stopped
	stop     sync.Once
	discard  bool // set before jobs closes: the uploader removes the upload

	mu      sync.Mutex
	err     error       // the first failure of a part
	done    map[int]job // parts stored past the saved prefix
	saveMu  sync.Mutex  // orders state saves
	saved   int64       // the offset of the last saved state
	closed  bool
	commitd bool
}

// job is one part to upload: its bytes, the blob offset at its end and the
// hash state there.
type job struct {
	number int
	data   []byte
	end    int64
	hash   []byte
	etag   string
}

// newWriter starts the uploader goroutine, which holds ctx: part uploads run
// under the context the writer was made with, and end with it.
func newWriter(ctx context.Context, s *Store, st *state, h hash.Hash, tail []byte) *writer {
	w := &writer{
		s: s, st: st, h: h, offset: st.Offset + int64(len(tail)), nextPart: len(st.Parts) + 1, saved: st.Offset,
		jobs: make(chan job), tokens: make(chan struct{}, s.cfg.Concurrency), finished: make(chan struct{}),
		done: map[int]job{},
	}
	if tail != nil {
		// The tail is the start of the next part again; the state saved
		// with the next part forgets it.
		w.buf = append(w.newBuf(), tail...)
		st.Tail, st.TailHash = 0, nil
	}
	if st.UploadID != "" {
		s.markInFlight(st.UploadID, true)
	}
	go w.upload(ctx)
	return w
}

func (w *writer) upload(ctx context.Context) {
	defer close(w.finished)
	for {
		w.tokens <- struct{}{}
		j, ok := <-w.jobs
		if !ok {
			<-w.tokens
			break
		}
		// drop ends a part that cannot be sent, with the upload's failure.
		drop := func(err error) {
			w.fail(err)
			<-w.tokens
			w.s.putBuf(j.data)
			w.parts.Done()
		}
		if w.st.UploadID == "" {
			if err := w.startMultipart(ctx); err != nil {
				drop(err)
				continue
			}
		}
		weight := w.s.partWeight(len(j.data))
		if err := w.s.mem.Acquire(ctx, weight); err != nil {
			drop(err)
			continue
		}
		go func() {
			defer func() { w.s.mem.Release(weight); <-w.tokens; w.parts.Done() }()
			w.putPart(ctx, j)
		}()
	}
	w.parts.Wait()
	if w.st.UploadID != "" {
		w.s.markInFlight(w.st.UploadID, false)
	}
	if w.discard {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
		defer cancel()
		_ = w.s.forget(cctx, w.st)
	}
}

func (w *writer) startMultipart(ctx context.Context) error {
	id, err := w.s.core.NewMultipartUpload(ctx, w.s.cfg.Bucket, w.st.Key, minio.PutObjectOptions{ContentType: w.st.MediaType})
	if err != nil {
		return w.s.classify(err, "starting the multipart upload of %q", w.st.Ref)
	}
	w.mu.Lock()
	w.st.UploadID = id
	w.mu.Unlock()
	w.s.markInFlight(id, true)
	return nil
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// refuse ends the upload for good with err, discarding what it holds: the
// writer's later calls return err too.
func (w *writer) refuse(err error) error {
	w.fail(err)
	w.finish(true)
	return err
}

func (w *writer) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// putPart stores one part, then saves the state when the stored parts now
// reach further from the start without a gap.
func (w *writer) putPart(ctx context.Context, j job) {
	p, err := w.s.core.PutObjectPart(ctx, w.s.cfg.Bucket, w.st.Key, w.st.UploadID, j.number,
		bytes.NewReader(j.data), int64(len(j.data)), partOptions)
	w.s.putBuf(j.data)
	if err != nil {
		w.fail(w.s.classify(err, "storing part %d of upload %q", j.number, w.st.Ref))
		return
	}
	j.data, j.etag = nil, p.ETag
	w.mu.Lock()
	w.done[j.number] = j
	advanced := false
	for {
		next, ok := w.done[len(w.st.Parts)+1]
		if !ok {
			break
		}
		delete(w.done, next.number)
		size := next.end - w.st.Offset
		w.st.Parts = append(w.st.Parts, part{Number: next.number, ETag: next.etag, Size: size})
		w.st.Offset, w.st.Hash = next.end, next.hash
		advanced = true
	}
	w.st.UpdatedAt = time.Now().UTC()
	snap := *w.st
	snap.Parts = slices.Clone(w.st.Parts)
	w.mu.Unlock()
	if !advanced {
		return
	}
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	if snap.Offset > w.saved && w.s.writeState(ctx, &snap) == nil {
		w.saved = snap.Offset
	}
}

func (w *writer) Offset() int64 { return w.offset }

func (w *writer) Write(p []byte) (int, error) {
	if w.closed || w.commitd {
		return 0, errdefs.FailedPrecondition("upload %q is finished", w.st.Ref)
	}
	if err := w.failure(); err != nil {
		return 0, err
	}
	if w.st.Size >= 0 && w.offset+int64(len(p)) > w.st.Size {
		return 0, w.refuse(blob.TooLong(w.st.Ref, w.st.Size, w.offset+int64(len(p))))
	}
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			if w.nextPart > maxParts {
				return n - len(p), w.refuse(errdefs.ResourceExhausted("upload %q: past %d bytes, more than S3's 10,000 parts of %d bytes; declare the blob's size so that larger parts are used",
					w.st.Ref, w.offset, w.st.PartSize).WithReason("BLOB_TOO_LARGE"))
			}
			w.buf = w.newBuf()
		}
		k := min(len(p), int(w.st.PartSize)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		w.h.Write(p[:k])
		w.offset += int64(k)
		p = p[k:]
		if int64(len(w.buf)) == w.st.PartSize && (w.st.Size < 0 || w.offset < w.st.Size) {
			// A full part that is not the last: send it. (The last part,
			// even a full one, waits for Commit, which knows it is last.)
			state, _ := w.h.(encoding.BinaryMarshaler).MarshalBinary()
			w.parts.Add(1)
			w.jobs <- job{number: w.nextPart, data: w.buf, end: w.offset, hash: state}
			w.nextPart++
			w.buf = nil
			if err := w.failure(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// newBuf returns the buffer of the next part. The first part's grows as it
// fills, since most blobs (configs, manifests, small layers) are far
// smaller than a part; later parts take a full one from the pool.
func (w *writer) newBuf() []byte {
	if w.nextPart == 1 {
		n := int64(64 << 10)
		if w.st.Size >= 0 {
			n = min(w.st.Size, w.st.PartSize)
		}
		return make([]byte, 0, n)
	}
	return w.s.getBuf(w.st.PartSize)
}

// finish stops the uploader once, after the parts in flight; with discard,
// the upload is removed.
func (w *writer) finish(discard bool) {
	w.stop.Do(func() {
		w.discard = discard
		close(w.jobs)
	})
	<-w.finished
	if w.buf != nil {
		w.s.putBuf(w.buf)
		w.buf = nil
	}
}

func (w *writer) Commit(ctx context.Context, atCommit digest.Digest) (blob.Info, error) {
	if w.closed || w.commitd {
		return blob.Info{}, errdefs.FailedPrecondition("upload %q is finished", w.st.Ref)
	}
	expected, err := blob.CommitDigest(w.st.Expected, atCommit)
	if err != nil {
		return blob.Info{}, err
	}
	if err := w.failure(); err != nil {
		return blob.Info{}, err
	}
	actual := digest.NewDigest(blob.HashOf(w.st.Expected), w.h)
	if expected.Algorithm() != actual.Algorithm() {
		// The parts are hashed as they go; their bytes are not read again.
		return blob.Info{}, errdefs.InvalidArgument("upload %q: committed as %s, but the S3 backend hashed it as %s: declare a %s digest when the upload starts",
			w.st.Ref, expected, actual.Algorithm(), expected.Algorithm()).WithReason("INVALID_DIGEST").WithDetail("digest", string(expected))
	}
	if err := blob.Verify(expected, w.st.Size, actual, w.offset); err != nil {
		w.commitd = true
		w.finish(true)
		return blob.Info{}, err
	}
	tail := w.buf
	w.buf = nil
	defer func() {
		if tail != nil {
			w.s.putBuf(tail)
		}
	}()
	w.finish(false)
	if err := w.failure(); err != nil {
		return blob.Info{}, err
	}
	info := blob.Info{Digest: expected, Size: w.offset, CreatedAt: time.Now().UTC()}
	if w.exists(ctx, expected) {
		w.commitd = true
		w.forget(ctx)
		return blob.Info{}, errdefs.AlreadyExists("blob %s already exists", expected).WithReason("BLOB_EXISTS")
	}
	var cerr error
	if w.st.UploadID == "" {
		_, err := w.s.core.PutObject(ctx, w.s.cfg.Bucket, blobKey(expected), bytes.NewReader(tail), int64(len(tail)), "", "",
			minio.PutObjectOptions{ContentType: w.st.MediaType})
		cerr = w.s.classify(err, "storing %s", expected)
	} else {
		cerr = w.complete(ctx, expected, tail)
	}
	if cerr != nil {
		return blob.Info{}, cerr
	}
	w.commitd = true
	_ = w.s.core.RemoveObject(ctx, w.s.cfg.Bucket, tailKey(w.st.Ref), minio.RemoveObjectOptions{})
	_ = w.s.core.RemoveObject(ctx, w.s.cfg.Bucket, stateKey(w.st.Ref), minio.RemoveObjectOptions{})
	return info, nil
}

func (w *writer) exists(ctx context.Context, d digest.Digest) bool {
	_, err := w.s.core.StatObject(ctx, w.s.cfg.Bucket, blobKey(d), minio.StatObjectOptions{})
	return err == nil
}

func (w *writer) forget(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
	defer cancel()
	_ = w.s.forget(cctx, w.st)
}

// complete stores the last part and completes the multipart upload: onto the
// blob's key, or, when the digest came only now, onto the staging key and
// then copied to the blob's key.
func (w *writer) complete(ctx context.Context, d digest.Digest, tail []byte) error {
	parts := make([]minio.CompletePart, 0, len(w.st.Parts)+1)
	for _, p := range w.st.Parts {
		parts = append(parts, minio.CompletePart{PartNumber: p.Number, ETag: p.ETag})
	}
	if len(tail) > 0 {
		p, err := w.s.core.PutObjectPart(ctx, w.s.cfg.Bucket, w.st.Key, w.st.UploadID, w.nextPart,
			bytes.NewReader(tail), int64(len(tail)), partOptions)
		if err != nil {
			return w.s.classify(err, "storing the last part of upload %q", w.st.Ref)
		}
		parts = append(parts, minio.CompletePart{PartNumber: w.nextPart, ETag: p.ETag})
	}
	_, err := w.s.core.CompleteMultipartUpload(ctx, w.s.cfg.Bucket, w.st.Key, w.st.UploadID, parts,
		minio.PutObjectOptions{ContentType: w.st.MediaType})
	if err != nil {
		return w.s.classify(err, "completing upload %q", w.st.Ref)
	}
	if w.st.Key == blobKey(d) {
		return nil
	}
	// The staging object is complete; the upload cannot resume any more.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
		defer cancel()
		_ = w.s.core.RemoveObject(cctx, w.s.cfg.Bucket, w.st.Key, minio.RemoveObjectOptions{})
		_ = w.s.core.RemoveObject(cctx, w.s.cfg.Bucket, stateKey(w.st.Ref), minio.RemoveObjectOptions{})
	}()
	_, err = w.s.core.ComposeObject(ctx,
		minio.CopyDestOptions{Bucket: w.s.cfg.Bucket, Object: blobKey(d), ContentType: w.st.MediaType, ReplaceMetadata: w.st.MediaType != ""},
		minio.CopySrcOptions{Bucket: w.s.cfg.Bucket, Object: w.st.Key})
	return w.s.classify(err, "copying upload %q to %s", w.st.Ref, d)
}

// Close keeps an uncommitted upload resumable from every byte written: its
// stored parts, and the bytes of the unfinished part in the tail object.
func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	tail := w.buf
	w.buf = nil
	w.finish(false)
	defer w.s.locks.Unlock(w.st.Ref)
	if w.commitd || len(tail) == 0 || w.failure() != nil {
		w.s.putBuf(tail)
		return nil
	}
	defer w.s.putBuf(tail)
	w.mu.Lock()
	complete := w.st.Offset+int64(len(tail)) == w.offset
	w.mu.Unlock()
	if !complete {
		return nil // a part failed: the upload resumes after the parts stored
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	if _, err := w.s.core.PutObject(ctx, w.s.cfg.Bucket, tailKey(w.st.Ref), bytes.NewReader(tail), int64(len(tail)), "", "", minio.PutObjectOptions{}); err != nil {
		return w.s.classify(err, "keeping the last bytes of upload %q", w.st.Ref)
	}
	hashState, err := w.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	w.mu.Lock()
	snap := *w.st
	snap.Parts = slices.Clone(w.st.Parts)
	snap.Tail, snap.TailHash, snap.UpdatedAt = int64(len(tail)), hashState, time.Now().UTC()
	w.mu.Unlock()
	return w.s.writeState(ctx, &snap)
}

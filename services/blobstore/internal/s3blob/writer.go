package s3blob

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// partOptions skip minio-go's SHA-256 of each part's payload unless
// Config.SignPayload asks for it: the writer hashes every byte for the
// blob's digest already, which the commit checks. Unsigned parts carry no
// checksum of their own (minio-go adds none to PutObjectPart).
func (s *Store) partOptions() minio.PutObjectPartOptions {
	return minio.PutObjectPartOptions{DisableContentSha256: !s.cfg.SignPayload}
}

// stateTimeout bounds the clean-up a writer does after its caller's context
// ended.
const stateTimeout = 30 * time.Second

// writer receives a blob in the caller's goroutine, hashing as bytes come,
// and cuts it into parts that an uploader goroutine sends to S3, at most
// Concurrency at once. Write blocks while that many are in flight, which
// bounds memory to about (Concurrency+1) parts.
type writer struct {
	s        *Store
	owner    string    // this writer, as the upload's state names it
	st       *state    // Parts, Offset, Hash, UploadID and UpdatedAt change under mu
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

	beatStop chan struct{} // closed to stop the lease's renewal
	beatDone chan struct{} // closed once it stopped

	mu     sync.Mutex
	err    error       // the first failure of a part
	done   map[int]job // parts stored past the saved prefix
	saveMu sync.Mutex  // orders state saves
	etag   string      // of the state this writer saved last, under saveMu
	// leaseUntil is when the lease this writer saved last runs out, under
	// saveMu; zero when unknown.
	leaseUntil time.Time
	closed     bool
	commitd    bool
	gone       bool // the upload was discarded or committed: nothing to let go
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

// newWriter starts the uploader goroutine and the lease's renewal, which
// hold ctx: part uploads run under the context the writer was made with,
// and end with it. owner holds st, saved under etag; tail are the bytes
// past st's parts that the last writer kept (see state.Tail).
func newWriter(ctx context.Context, s *Store, st *state, etag, owner string, h hash.Hash, tail []byte) *writer {
	w := &writer{
		s: s, owner: owner, st: st, etag: etag, leaseUntil: st.LeaseUntil, h: h, offset: st.Offset + int64(len(tail)), nextPart: len(st.Parts) + 1,
		jobs: make(chan job), tokens: make(chan struct{}, s.cfg.Concurrency), finished: make(chan struct{}),
		beatStop: make(chan struct{}), beatDone: make(chan struct{}),
		done: map[int]job{},
	}
	if tail != nil {
		// The tail is the start of the next part again; the state saved
		// with the next part forgets it.
		w.buf = append(w.newBuf(), tail...)
		st.Tail, st.TailHash, st.TailData = 0, nil, nil
	}
	go w.upload(ctx)
	go w.renew(ctx)
	return w
}

// renew saves the state every third of the lease, which keeps the upload
// this writer's while it lives, however slowly its client sends. A save
// that fails for S3's sake is tried at the next beat; one that finds the
// upload taken over stops the writer.
func (w *writer) renew(ctx context.Context) {
	defer close(w.beatDone)
	t := time.NewTicker(w.s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-w.beatStop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.save(ctx, true); isTakenOver(err) {
			w.fail(err)
			return
		}
	}
}

// save writes the upload's state as this writer has it, holding the lease
// for another term (hold) or letting go of it, on the condition that the
// bucket holds the copy this writer saved last. When it holds another, it
// is read back: when it still names this writer (an earlier save went
// through but its answer was lost to a cut connection), the save goes over
// it; otherwise the upload was taken over or removed while this writer
// stalled past its lease, and save fails with UPLOAD_TAKEN_OVER.
func (w *writer) save(ctx context.Context, hold bool) error {
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	w.mu.Lock()
	snap := *w.st
	snap.Parts = slices.Clone(w.st.Parts)
	w.mu.Unlock()
	snap.Owner, snap.LeaseUntil = "", time.Time{}
	if hold {
		snap.Owner, snap.LeaseUntil = w.owner, time.Now().Add(w.s.cfg.LeaseTTL).UTC()
	}
	etag, err := w.s.writeState(ctx, &snap, w.etag)
	if errors.Is(err, errChanged) {
		cur, curTag, rerr := w.s.readState(ctx, snap.Ref)
		switch {
		case rerr == nil && cur.Owner == w.owner:
			etag, err = w.s.writeState(ctx, &snap, curTag)
		case rerr != nil && !errdefs.IsNotFound(rerr):
			err = rerr
		}
		if errors.Is(err, errChanged) {
			err = takenOver(snap.Ref, cur)
		}
	}
	if err != nil {
		return err
	}
	w.etag, w.leaseUntil = etag, snap.LeaseUntil
	return nil
}

func takenOver(ref string, cur *state) error {
	msg := fmt.Sprintf("upload %q was removed (aborted, or finished by another writer) while this writer stalled past its lease", ref)
	switch {
	case cur != nil && cur.Owner != "":
		msg = fmt.Sprintf("upload %q was taken over by %s while this writer stalled past its lease; it goes on there", ref, cur.Owner)
	case cur != nil:
		msg = fmt.Sprintf("upload %q was taken over by another writer while this one stalled past its lease", ref)
	}
	return errdefs.Unavailable("%s", msg).WithReason("UPLOAD_TAKEN_OVER").WithDetail("ref", ref)
}

func isTakenOver(err error) bool {
	var e *errdefs.Error
	return errors.As(err, &e) && e.Reason() == "UPLOAD_TAKEN_OVER"
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
	// Saved at once, so that no janitor takes it for a crash's orphan.
	return w.save(ctx, true)
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
		bytes.NewReader(j.data), int64(len(j.data)), w.s.partOptions())
	w.s.putBuf(j.data)
	if isNotFound(err) {
		w.fail(errdefs.Unavailable("upload %q: its multipart upload is gone (aborted, or finished by another writer while this one stalled past its lease)",
			w.st.Ref).WithReason("UPLOAD_TAKEN_OVER").WithDetail("ref", w.st.Ref))
		return
	}
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
	w.mu.Unlock()
	if !advanced {
		return
	}
	// A save that fails for S3's sake only leaves the offset where it was.
	if err := w.save(ctx, true); isTakenOver(err) {
		w.fail(err)
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
		if need := len(w.buf) + k; need > cap(w.buf) && w.st.PartSize == w.s.cfg.PartSize {
			// The first part of a blob of unknown size grows (see newBuf)
			// by doubling, then, past half a part, into a full part from
			// the pool: append's smaller steps would copy a large one
			// many times over, and a blob of a few MiB holds at most
			// twice its size.
			var nb []byte
			if n := max(2*cap(w.buf), need); int64(n) <= w.st.PartSize/2 {
				nb = make([]byte, 0, n)
			} else {
				nb = w.s.getBuf(w.st.PartSize)
			}
			w.buf = append(nb, w.buf...)
		}
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
// fills (see Write), since most blobs (configs, manifests, small layers)
// are far smaller than a part; later parts take a full one from the pool.
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

// finish stops the uploader once, after the parts in flight, and the
// lease's renewal; with discard, the upload is removed.
func (w *writer) finish(discard bool) {
	w.stop.Do(func() {
		w.discard = discard
		w.gone = w.gone || discard
		close(w.jobs)
		close(w.beatStop)
	})
	<-w.finished
	<-w.beatDone
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
		w.commitd, w.gone = true, true
		w.forget(ctx)
		return blob.Info{}, errdefs.AlreadyExists("blob %s already exists", expected).WithReason("BLOB_EXISTS")
	}
	// The lease is renewed before the blob is made visible, unless most
	// of it is left (as when the writer was opened just now): a writer
	// that stalled past it and was taken over stops here.
	if !w.leaseHeld(w.s.cfg.LeaseTTL / 2) {
		if err := w.save(ctx, true); err != nil {
			return blob.Info{}, err
		}
	}
	var cerr error
	if w.st.UploadID == "" {
		// A sha256 blob is signed with its digest, which S3 checks, rather
		// than with a streaming signature (see writeState).
		opts, sum := minio.PutObjectOptions{ContentType: w.st.MediaType}, ""
		if expected.Algorithm() == digest.SHA256 {
			opts.DisableContentSha256, sum = true, expected.Encoded()
		}
		_, err := w.s.core.PutObject(ctx, w.s.cfg.Bucket, blobKey(expected), bytes.NewReader(tail), int64(len(tail)), "", sum, opts)
		cerr = w.s.classify(err, "storing %s", expected)
	} else {
		cerr = w.complete(ctx, expected, tail)
	}
	if cerr != nil {
		return blob.Info{}, cerr
	}
	w.commitd, w.gone = true, true
	if w.st.TailObject {
		w.s.remove(ctx, tailKey(w.st.Ref))
	}
	w.s.remove(ctx, stateKey(w.st.Ref))
	return info, nil
}

// leaseHeld reports whether this writer's lease, as it saved it last,
// runs for at least d more: no other holder can have taken the upload.
func (w *writer) leaseHeld(d time.Duration) bool {
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	return time.Until(w.leaseUntil) >= d
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
			bytes.NewReader(tail), int64(len(tail)), w.s.partOptions())
		if err != nil {
			return w.s.classify(err, "storing the last part of upload %q", w.st.Ref)
		}
		parts = append(parts, minio.CompletePart{PartNumber: w.nextPart, ETag: p.ETag})
	}
	if err := w.completeMultipart(ctx, parts); err != nil {
		return err
	}
	if w.st.Key == blobKey(d) {
		return nil
	}
	// The staging object is complete; the upload cannot resume any more.
	defer func() {
		w.s.remove(ctx, w.st.Key)
		w.s.remove(ctx, stateKey(w.st.Ref))
	}()
	_, err := w.s.core.ComposeObject(ctx,
		minio.CopyDestOptions{Bucket: w.s.cfg.Bucket, Object: blobKey(d), ContentType: w.st.MediaType, ReplaceMetadata: w.st.MediaType != ""},
		minio.CopySrcOptions{Bucket: w.s.cfg.Bucket, Object: w.st.Key})
	return w.s.classify(err, "copying upload %q to %s", w.st.Ref, d)
}

// completeMultipart completes the multipart upload and returns once its
// object is there, of the size written. An answer to Complete alone does
// not say so when a Complete of the upload was tried before (a retry after
// a lost answer or a cut connection, which are common under faults): S3
// answers NoSuchUpload once the first one is done, and versitygw answers
// success at once while the first one is still assembling the object,
// which may yet fail and give the upload back. So the object is looked at,
// until it is there (done), the upload is back (its Complete is sent again)
// or neither happens in a while (UNAVAILABLE; the upload stays for a
// resume).
func (w *writer) completeMultipart(ctx context.Context, parts []minio.CompletePart) error {
	// An assembly copies the bytes once: allow 30 s, and 1 s more per 64 MiB.
	patience := stateTimeout + time.Duration(w.offset>>26)*time.Second
	for {
		_, err := w.s.core.CompleteMultipartUpload(ctx, w.s.cfg.Bucket, w.st.Key, w.st.UploadID, parts,
			minio.PutObjectOptions{ContentType: w.st.MediaType})
		if err != nil && !isNotFound(err) {
			return w.s.classify(err, "completing upload %q", w.st.Ref)
		}
		deadline := time.Now().Add(patience)
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			oi, err := w.s.core.StatObject(ctx, w.s.cfg.Bucket, w.st.Key, minio.StatObjectOptions{})
			switch {
			case err == nil && oi.Size == w.offset:
				return nil
			case err != nil && !isNotFound(err):
				return w.s.classify(err, "completing upload %q", w.st.Ref)
			}
			_, err = w.s.core.ListObjectParts(ctx, w.s.cfg.Bucket, w.st.Key, w.st.UploadID, 0, 1)
			if err == nil {
				break // the upload is back: complete it again
			}
			if !isNotFound(err) {
				return w.s.classify(err, "completing upload %q", w.st.Ref)
			}
			if time.Now().After(deadline) {
				return errdefs.Unavailable("completing upload %q: S3 at %s answered, but after %v neither the object nor the upload is there",
					w.st.Ref, w.s.cfg.Endpoint, patience).WithReason("S3_ERROR").WithDetail("ref", w.st.Ref)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}
}

// Close keeps an uncommitted upload resumable from every byte written (its
// stored parts, and the bytes of the unfinished part in the state or the
// tail object), and lets go of it, so that a writer elsewhere may resume
// it at once. It fails when the upload may resume from fewer bytes.
func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	tail := w.buf
	w.buf = nil
	w.finish(false)
	defer w.s.putBuf(tail)
	if w.gone {
		return nil
	}
	// Short: an unreachable S3 would only delay the caller, and the lease
	// runs out anyway (the upload then resumes after its stored parts).
	ctx, cancel := context.WithTimeout(context.Background(), w.s.cfg.LeaseTTL/3)
	defer cancel()
	kept := w.failure()
	if !w.commitd && len(tail) > 0 && kept == nil {
		kept = w.keepTail(ctx, tail)
	}
	return errors.Join(kept, w.save(ctx, false))
}

// maxInlineTail is the most bytes of an unfinished part kept in the
// upload's state rather than in a tail object.
const maxInlineTail = 64 << 10

// keepTail keeps the bytes of the unfinished part, in the state the next
// save writes or in the upload's tail object, when every part before them
// is stored.
func (w *writer) keepTail(ctx context.Context, tail []byte) error {
	w.mu.Lock()
	complete := w.st.Offset+int64(len(tail)) == w.offset
	w.mu.Unlock()
	if !complete {
		return errdefs.Unavailable("upload %q: a part before byte %d could not be stored: it resumes from fewer bytes", w.st.Ref, w.offset)
	}
	hashState, err := w.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	var data []byte
	if len(tail) <= maxInlineTail {
		data = slices.Clone(tail)
	} else {
		// Noted in the saved state before the object is written, so that
		// whoever ends the upload removes it.
		w.mu.Lock()
		noted := w.st.TailObject
		w.st.TailObject = true
		w.mu.Unlock()
		if !noted {
			if err := w.save(ctx, true); err != nil {
				return err
			}
		}
		if _, err := w.s.core.PutObject(ctx, w.s.cfg.Bucket, tailKey(w.st.Ref), bytes.NewReader(tail), int64(len(tail)), "", "", minio.PutObjectOptions{}); err != nil {
			return w.s.classify(err, "keeping the last bytes of upload %q", w.st.Ref)
		}
	}
	w.mu.Lock()
	w.st.Tail, w.st.TailHash, w.st.TailData = int64(len(tail)), hashState, data
	w.mu.Unlock()
	return nil
}

package s3blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// state is an unfinished upload as saved in the bucket. Offset is the end of
// the last stored part, and Hash the hash state (of the declared digest's
// algorithm, sha256 when none was declared) after exactly Offset bytes: a
// resumed writer continues hashing from there.
//
// The upload's writer is whoever Owner names while LeaseUntil has not
// passed: every replica sees the same object, so one writer holds an
// upload at a time whatever replica it runs on. Every save is conditional
// on the object being the one its saver last read or wrote (If-Match on
// its ETag, If-None-Match for a new upload), so a claim cannot be lost to a
// concurrent one, and a writer whose lease ran out and was taken over
// finds out at its next save and stops. A writer renews its lease every
// third of the lease while it lives (Config.LeaseTTL), and lets go on
// Close, so that a resume elsewhere needs no wait; a crashed one's lease
// runs out.
type state struct {
	Ref       string        `json:"ref"`
	Expected  digest.Digest `json:"expected,omitempty"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	PartSize  int64         `json:"partSize"`
	Key       string        `json:"key,omitempty"`
	UploadID  string        `json:"uploadId,omitempty"`
	Parts     []part        `json:"parts,omitempty"`
	Offset    int64         `json:"offset"`
	Hash      []byte        `json:"hash,omitempty"`
	// Tail is how many bytes after Offset a writer that closed without a
	// commit kept of an unfinished part, so that an upload resumes exactly
	// where its last writer stopped (the registry's chunks fall anywhere
	// on the parts). TailHash is the hash state after them. Up to
	// maxInlineTail bytes are kept in the state itself (TailData), which
	// costs no request of its own: a registry push of a small layer is a
	// PATCH of the whole layer, then a PUT. Longer tails are kept in the
	// tail object (tailKey).
	Tail     int64  `json:"tail,omitempty"`
	TailHash []byte `json:"tailHash,omitempty"`
	TailData []byte `json:"tailData,omitempty"`
	// TailObject says that a tail object was written for the upload and
	// may still be there, to be removed with the upload.
	TailObject bool      `json:"tailObject,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	// Owner names the writer (or janitor, or abort) holding the upload;
	// empty when none does.
	Owner string `json:"owner,omitempty"`
	// LeaseUntil is when Owner's hold ends unless renewed.
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
}

type part struct {
	Number int    `json:"number"`
	ETag   string `json:"etag"`
	Size   int64  `json:"size"`
}

func (st *state) upload() blob.Upload {
	return blob.Upload{Ref: st.Ref, Expected: st.Expected, Size: st.Size, Offset: st.Offset + st.Tail, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt}
}

func uploadNotFound(ref string) error {
	return errdefs.NotFound("upload %q not found", ref).WithReason("UPLOAD_NOT_FOUND").WithDetail("ref", ref)
}

// readState reads the upload under ref and the ETag of its saved copy.
func (s *Store) readState(ctx context.Context, ref string) (*state, string, error) {
	body, info, _, err := s.core.GetObject(ctx, s.cfg.Bucket, stateKey(ref), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return nil, "", uploadNotFound(ref)
		}
		return nil, "", s.classify(err, "reading upload %q", ref)
	}
	defer body.Close()
	var st state
	if err := json.NewDecoder(body).Decode(&st); err != nil {
		return nil, "", s.classify(err, "reading upload %q", ref)
	}
	return &st, info.ETag, nil
}

// errChanged is writeState's answer when the saved copy is not the one the
// caller expected: another process saved or removed it meanwhile.
var errChanged = errors.New("the upload's saved state changed")

// writeState saves st over the copy whose ETag is etag, or as a new upload
// when etag is empty, and returns the ETag of what it saved; errChanged
// when the bucket holds another copy (or, for a new upload, any).
func (s *Store) writeState(ctx context.Context, st *state, etag string) (string, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	// Signed with the body's SHA-256, taken here: over plain HTTP
	// minio-go's default is a streaming signature, whose 64 KiB chunk
	// buffer per request was a tenth of the blob store's CPU in a registry
	// push of small layers, which saves a state a few times per layer.
	sum := sha256.Sum256(b)
	opts := minio.PutObjectOptions{ContentType: "application/json", DisableContentSha256: true}
	if etag == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(etag)
	}
	info, err := s.core.PutObject(ctx, s.cfg.Bucket, stateKey(st.Ref), bytes.NewReader(b), int64(len(b)), "", hex.EncodeToString(sum[:]), opts)
	if resp := minio.ToErrorResponse(err); err != nil && (resp.StatusCode == http.StatusPreconditionFailed ||
		resp.Code == "PreconditionFailed" || resp.Code == "ConditionalRequestConflict" || etag != "" && isNotFound(err)) {
		return "", errChanged
	}
	if err != nil {
		return "", s.classify(err, "saving upload %q", st.Ref)
	}
	return info.ETag, nil
}

// newOwner names a new holder of uploads: the host, what holds them, and
// a random part.
func (s *Store) newOwner(role string) string {
	return fmt.Sprintf("%s/%s/%s", s.host, role, rand.Text()[:12])
}

// held reports whether another holder than owner has the upload now.
func (st *state) held(owner string) bool {
	return st.Owner != "" && st.Owner != owner && time.Now().Before(st.LeaseUntil)
}

func locked(st *state) error {
	return errdefs.Unavailable("upload %q is held by another writer (%s) until %s at the latest: retry then, or once it lets go",
		st.Ref, st.Owner, st.LeaseUntil.Format(time.RFC3339)).WithReason("UPLOAD_LOCKED").WithDetail("ref", st.Ref)
}

// isLocked reports whether err is claim's answer that another holder has
// the upload.
func isLocked(err error) bool {
	var e *errdefs.Error
	return errors.As(err, &e) && e.Reason() == "UPLOAD_LOCKED"
}

// claim makes owner the holder of the upload st, saved under etag ("" for
// a new upload), for a lease from now: ErrUnavailable (UPLOAD_LOCKED) when
// another holder's lease runs, or another claim got there first. It
// returns the ETag of the copy it saved.
func (s *Store) claim(ctx context.Context, st *state, etag, owner string) (string, error) {
	if st.held(owner) {
		return "", locked(st)
	}
	st.Owner, st.LeaseUntil = owner, time.Now().Add(s.cfg.LeaseTTL).UTC()
	etag, err := s.writeState(ctx, st, etag)
	if errors.Is(err, errChanged) {
		return "", errdefs.Unavailable("upload %q was claimed by another writer at the same moment: retry", st.Ref).
			WithReason("UPLOAD_LOCKED").WithDetail("ref", st.Ref)
	}
	return etag, err
}

// release lets go of an upload that owner holds, so that another writer
// can take it at once: best effort, since the lease runs out anyway.
func (s *Store) release(st state, etag string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaseTTL/3)
	defer cancel()
	st.Owner, st.LeaseUntil = "", time.Time{}
	_, _ = s.writeState(ctx, &st, etag)
}

// remove deletes what a finished upload leaves (its state, its staging
// object), trying again for up to stateTimeout, whatever happens to ctx:
// a delete is safe to repeat, and one left undone shows a committed upload
// as unfinished until the janitor's next round.
func (s *Store) remove(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := s.core.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{})
		if err == nil || isNotFound(err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// forget removes an upload: its multipart upload, staging object and state.
func (s *Store) forget(ctx context.Context, st *state) error {
	var errs []error
	if st.UploadID != "" {
		if err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, st.Key, st.UploadID); err != nil && !isNotFound(err) {
			errs = append(errs, s.classify(err, "aborting upload %q", st.Ref))
		}
	}
	for _, key := range []string{tailKey(st.Ref), stateKey(st.Ref)} {
		if err := s.core.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
			errs = append(errs, s.classify(err, "removing upload %q", st.Ref))
		}
	}
	return errors.Join(errs...)
}

// Upload implements blob.Store.
func (s *Store) Upload(ctx context.Context, ref string) (blob.Upload, error) {
	if err := blob.ValidateRef(ref); err != nil {
		return blob.Upload{}, err
	}
	if err := s.ensure(ctx); err != nil {
		return blob.Upload{}, err
	}
	st, _, err := s.readState(ctx, ref)
	if err != nil {
		return blob.Upload{}, err
	}
	return st.upload(), nil
}

// Abort implements blob.Store.
func (s *Store) Abort(ctx context.Context, ref string) error {
	if err := blob.ValidateRef(ref); err != nil {
		return err
	}
	if err := s.ensure(ctx); err != nil {
		return err
	}
	st, etag, err := s.readState(ctx, ref)
	if err != nil {
		return err
	}
	if _, err := s.claim(ctx, st, etag, s.newOwner("abort")); err != nil {
		return err
	}
	return s.forget(ctx, st)
}

// saved is an upload's state and the ETag of its copy in the bucket.
type saved struct {
	st   *state
	etag string
}

func (s *Store) states(ctx context.Context) ([]saved, error) {
	var out []saved
	for o := range s.core.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: "uploads/", Recursive: true}) {
		if o.Err != nil {
			return nil, s.classify(o.Err, "listing uploads")
		}
		ref, isState := strings.CutSuffix(strings.TrimPrefix(o.Key, "uploads/"), ".json")
		if !isState || blob.ValidateRef(ref) != nil {
			continue
		}
		st, etag, err := s.readState(ctx, ref)
		if errdefs.IsNotFound(err) {
			continue // finished since it was listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, saved{st, etag})
	}
	return out, nil
}

// Uploads implements blob.Store.
func (s *Store) Uploads(ctx context.Context) ([]blob.Upload, error) {
	if err := s.ensure(ctx); err != nil {
		return nil, err
	}
	sts, err := s.states(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]blob.Upload, len(sts))
	for i, sv := range sts {
		out[i] = sv.st.upload()
	}
	return out, nil
}

// CleanUploads implements blob.Store: it discards the idle uploads no one
// holds, and aborts the multipart uploads begun before before that no
// upload owns (left by a crash between starting one and saving its state).
// Every replica's janitor may run it at once: each idle upload is claimed
// before it is discarded, so one of them discards it and the others pass.
func (s *Store) CleanUploads(ctx context.Context, before time.Time) (int, error) {
	if err := s.ensure(ctx); err != nil {
		return 0, err
	}
	// Multipart uploads are listed before the states that own them: one
	// begun after this listing is not looked at, and one whose state is
	// saved meanwhile shows as owned.
	type mpu struct{ key, id string }
	var orphans []mpu
	for _, prefix := range []string{"blobs/", "ingest/"} {
		keyMarker, idMarker := "", ""
		for {
			res, err := s.core.ListMultipartUploads(ctx, s.cfg.Bucket, prefix, keyMarker, idMarker, "", 1000)
			if err != nil {
				return 0, s.classify(err, "listing multipart uploads")
			}
			for _, u := range res.Uploads {
				if u.Initiated.Before(before) {
					orphans = append(orphans, mpu{u.Key, u.UploadID})
				}
			}
			if !res.IsTruncated {
				break
			}
			keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
		}
	}
	sts, err := s.states(ctx)
	if err != nil {
		return 0, err
	}
	janitor := s.newOwner("janitor")
	owned := map[string]bool{}
	held := map[string]bool{}
	n := 0
	var errs []error
	for _, sv := range sts {
		st := sv.st
		if st.held(janitor) || !st.UpdatedAt.Before(before) {
			owned[st.UploadID], held[st.Ref] = true, true
			continue
		}
		if _, err := s.claim(ctx, st, sv.etag, janitor); err != nil {
			// Taken by a writer, or by another replica's janitor.
			owned[st.UploadID], held[st.Ref] = true, true
			if !isLocked(err) {
				errs = append(errs, err)
			}
			continue
		}
		if err := s.forget(ctx, st); err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
	}
	for _, u := range orphans {
		if owned[u.id] {
			continue
		}
		if err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.key, u.id); err != nil && !isNotFound(err) {
			errs = append(errs, s.classify(err, "aborting multipart upload of %s", u.key))
		}
	}
	// Staging objects live only between completing an upload whose digest
	// came at commit and copying it, under its holder's lease; an old one
	// no one holds is a crash's leftover.
	for o := range s.core.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: "ingest/", Recursive: true}) {
		if o.Err != nil {
			errs = append(errs, s.classify(o.Err, "listing staging objects"))
			break
		}
		if o.LastModified.Before(before) && !held[strings.TrimPrefix(o.Key, "ingest/")] {
			if err := s.core.RemoveObject(ctx, s.cfg.Bucket, o.Key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
				errs = append(errs, s.classify(err, "removing %s", o.Key))
			}
		}
	}
	return n, errors.Join(errs...)
}

// NewWriter implements blob.Store.
func (s *Store) NewWriter(ctx context.Context, opts blob.WriterOptions) (blob.Writer, error) {
	if err := blob.ValidateWriterOptions(opts); err != nil {
		return nil, err
	}
	if limit := s.MaxBlobSize(); opts.Size > limit {
		return nil, errdefs.ResourceExhausted("blob of %d bytes: the S3 backend takes blobs of at most %d bytes (10,000 parts of at most --s3-max-parts × --s3-part-size bytes, and 5 TiB)",
			opts.Size, limit).WithReason("BLOB_TOO_LARGE")
	}
	if err := s.ensure(ctx); err != nil {
		return nil, err
	}
	owner := s.newOwner("writer")
	st, etag, err := s.readState(ctx, opts.Ref)
	switch {
	case errdefs.IsNotFound(err) && opts.ResumeOnly:
		return nil, err
	case errdefs.IsNotFound(err):
		st = s.newState(opts)
	case err != nil:
		return nil, err
	case st.Expected != opts.Expected || st.Size != opts.Size:
		return nil, errdefs.FailedPrecondition("upload %q is of %s (size %d), not %s (size %d): abort it or use another ref",
			opts.Ref, st.Expected, st.Size, opts.Expected, opts.Size).WithReason("UPLOAD_MISMATCH").WithDetail("ref", opts.Ref)
	}
	// Saved at once, new or resumed: Upload and Uploads see it, and no
	// other writer takes it while this one lives.
	if etag, err = s.claim(ctx, st, etag, owner); err != nil {
		return nil, err
	}
	w, err := s.openWriter(ctx, opts, st, etag, owner)
	if err != nil {
		s.release(*st, etag)
		return nil, err
	}
	return w, nil
}

// openWriter starts a writer of the upload st that owner has claimed.
func (s *Store) openWriter(ctx context.Context, opts blob.WriterOptions, st *state, etag, owner string) (*writer, error) {
	if st.UploadID != "" {
		// The janitor, or an operator, may have aborted the multipart upload.
		_, err := s.core.ListObjectParts(ctx, s.cfg.Bucket, st.Key, st.UploadID, 0, 1)
		if isNotFound(err) {
			fresh := s.newState(opts)
			if etag, err = s.claim(ctx, fresh, etag, owner); err != nil {
				return nil, err
			}
			*st = *fresh
		} else if err != nil {
			return nil, s.classify(err, "resuming upload %q", opts.Ref)
		}
	}
	tail, err := s.readTail(ctx, st)
	if err != nil {
		return nil, err
	}
	h := blob.HashOf(st.Expected).Hash()
	if tail != nil {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.TailHash); err != nil {
			return nil, errdefs.Internal("upload %q: its saved hash state is unusable: %v", opts.Ref, err)
		}
	} else if len(st.Hash) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
			return nil, errdefs.Internal("upload %q: its saved hash state is unusable: %v", opts.Ref, err)
		}
	} else if st.Offset != 0 {
		return nil, errdefs.Internal("upload %q: saved at %d bytes without a hash state", opts.Ref, st.Offset)
	}
	return newWriter(ctx, s, st, etag, owner, h, tail), nil
}

// readTail returns the bytes an upload keeps past its parts, in its state
// or its tail object, nil when it has none or they are not all there (the
// upload then resumes at the end of its parts).
func (s *Store) readTail(ctx context.Context, st *state) ([]byte, error) {
	if st.Tail == 0 {
		return nil, nil
	}
	b := st.TailData
	if b == nil {
		// A tail object, which the commit removes (a state saved by an
		// older blob store does not say there is one).
		st.TailObject = true
		body, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, tailKey(st.Ref), minio.GetObjectOptions{})
		if isNotFound(err) {
			st.Tail, st.TailHash = 0, nil
			return nil, nil
		}
		if err != nil {
			return nil, s.classify(err, "reading upload %q", st.Ref)
		}
		defer body.Close()
		if b, err = io.ReadAll(io.LimitReader(body, st.Tail+1)); err != nil {
			return nil, s.classify(err, "reading upload %q", st.Ref)
		}
	}
	if int64(len(b)) != st.Tail || len(st.TailHash) == 0 {
		st.Tail, st.TailHash, st.TailData = 0, nil, nil
		return nil, nil
	}
	return b, nil
}

func (s *Store) newState(opts blob.WriterOptions) *state {
	now := time.Now().UTC()
	partSize := s.cfg.PartSize
	if opts.Size > 0 {
		// Fit any declared size in S3's 10,000 parts, in whole MiB, up to
		// the largest part (NewWriter refused sizes beyond that).
		if need := (opts.Size + maxParts - 1) / maxParts; need > partSize {
			partSize = min((need+1<<20-1)&^(1<<20-1), s.maxPartSize())
		}
	}
	st := &state{Ref: opts.Ref, Expected: opts.Expected, Size: opts.Size, MediaType: opts.MediaType, PartSize: partSize, StartedAt: now, UpdatedAt: now}
	st.Key = ingestKey(opts.Ref)
	if opts.Expected != "" {
		st.Key = blobKey(opts.Expected)
	}
	return st
}

func (s *Store) getBuf(size int64) []byte {
	if size == s.cfg.PartSize {
		return (*s.bufs.Get().(*[]byte))[:0]
	}
	// A part grown for a large declared size fills as bytes arrive, so
	// that memory follows what clients send, not what they declare.
	return make([]byte, 0, min(size, 1<<20))
}

func (s *Store) putBuf(b []byte) {
	if int64(cap(b)) == s.cfg.PartSize {
		b = b[:0]
		s.bufs.Put(&b)
	}
}

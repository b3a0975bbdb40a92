package s3blob

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"io"
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
	// Tail is how many bytes after Offset the tail object (tailKey) holds:
	// the bytes of an unfinished part that a writer closed without a
	// commit kept there, so that an upload resumes exactly where its last
	// writer stopped (the registry's chunks fall anywhere on the parts).
	// TailHash is the hash state after them.
	Tail      int64     `json:"tail,omitempty"`
	TailHash  []byte    `json:"tailHash,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
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

func (s *Store) readState(ctx context.Context, ref string) (*state, error) {
	body, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, stateKey(ref), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return nil, uploadNotFound(ref)
		}
		return nil, s.classify(err, "reading upload %q", ref)
	}
	defer body.Close()
	var st state
	if err := json.NewDecoder(body).Decode(&st); err != nil {
		return nil, s.classify(err, "reading upload %q", ref)
	}
	return &st, nil
}

func (s *Store) writeState(ctx context.Context, st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.core.PutObject(ctx, s.cfg.Bucket, stateKey(st.Ref), bytes.NewReader(b), int64(len(b)), "", "",
		minio.PutObjectOptions{ContentType: "application/json"})
	return s.classify(err, "saving upload %q", st.Ref)
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
	st, err := s.readState(ctx, ref)
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
	if err := s.locks.Lock(ref); err != nil {
		return err
	}
	defer s.locks.Unlock(ref)
	st, err := s.readState(ctx, ref)
	if err != nil {
		return err
	}
	return s.forget(ctx, st)
}

func (s *Store) states(ctx context.Context) ([]*state, error) {
	var out []*state
	for o := range s.core.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: "uploads/", Recursive: true}) {
		if o.Err != nil {
			return nil, s.classify(o.Err, "listing uploads")
		}
		ref, isState := strings.CutSuffix(strings.TrimPrefix(o.Key, "uploads/"), ".json")
		if !isState || blob.ValidateRef(ref) != nil {
			continue
		}
		st, err := s.readState(ctx, ref)
		if errdefs.IsNotFound(err) {
			continue // finished since it was listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
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
	for i, st := range sts {
		out[i] = st.upload()
	}
	return out, nil
}

// CleanUploads implements blob.Store: it discards the idle uploads, and
// aborts the multipart uploads begun before before that no upload owns
// (left by a crash between starting one and saving its state).
func (s *Store) CleanUploads(ctx context.Context, before time.Time) (int, error) {
	if err := s.ensure(ctx); err != nil {
		return 0, err
	}
	sts, err := s.states(ctx)
	if err != nil {
		return 0, err
	}
	owned := map[string]bool{}
	n := 0
	var errs []error
	for _, st := range sts {
		if !st.UpdatedAt.Before(before) || s.locks.Lock(st.Ref) != nil {
			owned[st.UploadID] = true
			continue
		}
		if err := s.forget(ctx, st); err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
		s.locks.Unlock(st.Ref)
	}
	for _, prefix := range []string{"blobs/", "ingest/"} {
		keyMarker, idMarker := "", ""
		for {
			res, err := s.core.ListMultipartUploads(ctx, s.cfg.Bucket, prefix, keyMarker, idMarker, "", 1000)
			if err != nil {
				return n, errors.Join(append(errs, s.classify(err, "listing multipart uploads"))...)
			}
			for _, u := range res.Uploads {
				s.mu.Lock()
				live := s.inFlight[u.UploadID]
				s.mu.Unlock()
				if owned[u.UploadID] || live || !u.Initiated.Before(before) {
					continue
				}
				if err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.Key, u.UploadID); err != nil && !isNotFound(err) {
					errs = append(errs, s.classify(err, "aborting multipart upload of %s", u.Key))
				}
			}
			if !res.IsTruncated {
				break
			}
			keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
		}
	}
	// Staging objects live only between completing an upload whose digest
	// came at commit and copying it; an old one is a crash's leftover.
	for o := range s.core.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: "ingest/", Recursive: true}) {
		if o.Err != nil {
			errs = append(errs, s.classify(o.Err, "listing staging objects"))
			break
		}
		if o.LastModified.Before(before) && !s.locks.Held(strings.TrimPrefix(o.Key, "ingest/")) {
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
	if err := s.locks.Lock(opts.Ref); err != nil {
		return nil, err
	}
	w, err := s.openWriter(ctx, opts)
	if err != nil {
		s.locks.Unlock(opts.Ref)
		return nil, err
	}
	return w, nil
}

func (s *Store) openWriter(ctx context.Context, opts blob.WriterOptions) (*writer, error) {
	st, err := s.readState(ctx, opts.Ref)
	switch {
	case errdefs.IsNotFound(err):
		st = s.newState(opts)
	case err != nil:
		return nil, err
	case st.Expected != opts.Expected || st.Size != opts.Size:
		return nil, errdefs.FailedPrecondition("upload %q is of %s (size %d), not %s (size %d): abort it or use another ref",
			opts.Ref, st.Expected, st.Size, opts.Expected, opts.Size).WithReason("UPLOAD_MISMATCH").WithDetail("ref", opts.Ref)
	case st.UploadID != "":
		// The janitor, or an operator, may have aborted the multipart upload.
		_, err := s.core.ListObjectParts(ctx, s.cfg.Bucket, st.Key, st.UploadID, 0, 1)
		if isNotFound(err) {
			st = s.newState(opts)
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
	if st.Offset == 0 {
		// Saved at once, so that Upload and Uploads see it and a resume
		// finds it, whatever happens to this writer.
		if err := s.writeState(ctx, st); err != nil {
			return nil, err
		}
	}
	return newWriter(ctx, s, st, h, tail), nil
}

// readTail returns the bytes an upload's tail object holds past its parts,
// nil when it has none or they are not all there (the upload then resumes
// at the end of its parts).
func (s *Store) readTail(ctx context.Context, st *state) ([]byte, error) {
	if st.Tail == 0 {
		return nil, nil
	}
	body, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, tailKey(st.Ref), minio.GetObjectOptions{})
	if isNotFound(err) {
		st.Tail, st.TailHash = 0, nil
		return nil, nil
	}
	if err != nil {
		return nil, s.classify(err, "reading upload %q", st.Ref)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, st.Tail+1))
	if err != nil {
		return nil, s.classify(err, "reading upload %q", st.Ref)
	}
	if int64(len(b)) != st.Tail || len(st.TailHash) == 0 {
		st.Tail, st.TailHash = 0, nil
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

func (s *Store) markInFlight(uploadID string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.inFlight[uploadID] = true
	} else {
		delete(s.inFlight, uploadID)
	}
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

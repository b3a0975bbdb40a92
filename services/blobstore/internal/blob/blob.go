// Package blob holds the contract of Strata's blob store: immutable blobs
// addressed by their OCI digest, written through resumable uploads and read
// in ranges. Backends (fsblob, s3blob) implement Store; the gRPC adapter in
// internal/server only converts between it and strata.blob.v1.
//
// Error contract, for every Store method (errors match lib/errdefs kinds with
// errors.Is):
//   - ErrInvalidArgument: a malformed digest or ref, a bad range, a declared
//     size that does not fit, or content that does not match its digest or
//     size. Digests and refs are checked before any storage is touched.
//   - ErrNotFound: the blob or the upload does not exist.
//   - ErrAlreadyExists: Commit found the blob already stored (its bytes did
//     match); the caller decides that this is a success.
//   - ErrFailedPrecondition: an upload exists under the ref with another
//     digest or size.
//   - ErrUnavailable: the backend cannot be reached, or the ref is held by
//     another writer right now; safe to retry.
//   - ErrDataLoss: a stored blob's bytes no longer hash to its digest.
package blob

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Info describes a stored blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	CreatedAt time.Time
}

// Upload describes an unfinished upload.
type Upload struct {
	// Ref names the upload; a writer resumes it by asking for the same ref.
	Ref string
	// Expected is the digest the writer declared; empty when it declares it
	// at commit.
	Expected digest.Digest
	// Size is the declared total size, or -1 when unknown.
	Size int64
	// Offset is how many bytes the store holds durably: a resumed upload
	// continues from here. After a writer's Close it is every byte the
	// writer took; after a crash it may be less (backends persist in steps,
	// such as S3 parts).
	Offset int64
	// StartedAt is when the upload began; UpdatedAt when it last made progress.
	StartedAt, UpdatedAt time.Time
}

// WriterOptions describe the upload a writer starts or resumes.
type WriterOptions struct {
	// Ref names the upload (see ValidateRef).
	Ref string
	// Expected is the digest the blob must have. It may be left empty and
	// given to Commit instead, for content whose digest is known only once
	// it is all written (a layer compressed while it is produced).
	Expected digest.Digest
	// Size is the total size, or -1 when unknown. When known, a blob of any
	// other size is refused.
	Size int64
	// MediaType is a hint for the backend (stored as the object's content type).
	MediaType string
	// ResumeOnly makes NewWriter resume an unfinished upload under Ref and
	// fail with ErrNotFound when there is none, rather than start one.
	ResumeOnly bool
}

// Writer writes one upload. It appends at Offset. After an error from
// Write the writer only accepts Close: when the content cannot be the blob
// (ErrInvalidArgument) or is too large for the backend, the upload has been
// discarded; when the storage failed (ErrUnavailable, or ErrResourceExhausted
// for a full store), it stays resumable from its durable offset.
type Writer interface {
	io.Writer
	// Offset is the number of bytes of the blob the writer holds: the next
	// Write continues there.
	Offset() int64
	// Commit checks size and digest and makes the blob visible. expected is
	// the digest when it was not declared to NewWriter; when both are given
	// they must agree. On a mismatch it returns ErrInvalidArgument naming
	// both values and discards the upload; when the blob is already stored
	// it returns ErrAlreadyExists and discards the upload. Either way nothing
	// partial becomes visible.
	Commit(ctx context.Context, expected digest.Digest) (Info, error)
	// Close releases the writer. An upload that was not committed stays
	// resumable from its last byte written (Store.Upload); when Close
	// returns an error it may resume from fewer (Store.Upload says where).
	Close() error
}

// Store reads and writes immutable blobs addressed by digest. It is safe for
// concurrent use: two writers of one digest (under different refs) both end
// well and one copy is stored; deleting a blob while it is read leaves the
// store consistent (the reader finishes or fails, never reads other bytes).
type Store interface {
	// Stat describes a stored blob. It never reports a blob whose bytes are
	// not all stored.
	Stat(ctx context.Context, d digest.Digest) (Info, error)
	// Open returns a reader of length bytes (0: up to the end) from offset.
	// A range reaching past the end is cut at the end; an offset past the
	// end is ErrInvalidArgument. A reader of the whole blob checks what it
	// serves (Verified): when the stored bytes no longer hash to d, its
	// last Read fails with ErrDataLoss. A shorter range is served unchecked;
	// Check, run over every blob by a scrub, covers those.
	Open(ctx context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, Info, error)
	// NewWriter starts an upload under opts.Ref, or resumes the one held
	// under it (its Offset says where to continue). With opts.ResumeOnly,
	// ErrNotFound when no upload is held under it.
	NewWriter(ctx context.Context, opts WriterOptions) (Writer, error)
	// Put stores data, whole and at hand, as the blob d in one step and
	// without an upload: for small blobs (configs, manifests), which an
	// upload would cost several storage requests. It checks data against
	// d first: on a mismatch, ErrInvalidArgument naming both digests, and
	// nothing is stored; otherwise the blob becomes visible whole or not at
	// all. A blob already stored is a success. mediaType is a hint, as in
	// WriterOptions. Put does not keep data after it returns.
	Put(ctx context.Context, d digest.Digest, mediaType string, data []byte) (Info, error)
	// Delete removes a blob.
	Delete(ctx context.Context, d digest.Digest) error
	// List returns up to limit blobs whose digests sort after after (all
	// when after is empty), in digest order.
	List(ctx context.Context, after digest.Digest, limit int) ([]Info, error)
	// Upload describes the unfinished upload under ref.
	Upload(ctx context.Context, ref string) (Upload, error)
	// Abort discards the unfinished upload under ref and the bytes it holds.
	Abort(ctx context.Context, ref string) error
	// Uploads lists the unfinished uploads.
	Uploads(ctx context.Context) ([]Upload, error)
	// CleanUploads discards the unfinished uploads that made no progress
	// since before, and returns how many it discarded. Uploads held by a
	// writer are left alone. The janitor calls it.
	CleanUploads(ctx context.Context, before time.Time) (int, error)
}

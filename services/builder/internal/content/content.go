// Package content is the builder's view of the blob store: lib/blobclient
// behind the small interfaces the builder's packages declare (image.Blobs,
// transfer.Blobs, exec.Blobs; every upload is a layer.BlobWriter), with one
// policy added — an upload that
// is not committed is aborted, not left resumable, because a builder never
// resumes one (a failed layer is produced again from its source).
package content

import (
	"bytes"
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// Store reads and writes blobs through the blob service.
type Store struct {
	c *blobclient.Client
}

// New returns a Store over a blob service client.
func New(c *blobclient.Client) *Store { return &Store{c: c} }

// Put stores p under desc.Digest; an existing blob is a success.
func (s *Store) Put(ctx context.Context, desc ocispec.Descriptor, p []byte) error {
	_, err := s.c.Put(ctx, bytes.NewReader(p), desc.Digest, desc.Size, blobclient.WithMediaType(desc.MediaType))
	return err
}

// Writer opens an upload whose digest is given at Commit.
func (s *Store) Writer(ctx context.Context, mediaType string) (layer.BlobWriter, error) {
	// The caller hashes what it writes and commits with that digest, which
	// the blob service verifies: the client need not hash it a third time.
	w, err := s.c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithMediaType(mediaType), blobclient.WithDigestAtCommit())
	if err != nil {
		return nil, err
	}
	return &writer{c: s.c, w: w}, nil
}

// Missing returns those of ds the store does not hold.
func (s *Store) Missing(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	found, err := s.c.Exists(ctx, ds)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, d := range ds {
		if _, ok := found[d]; !ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// Open reads a blob from its start.
func (s *Store) Open(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	return s.c.Open(ctx, d, 0, 0)
}

// writer is a blob upload that aborts unless committed.
type writer struct {
	c         *blobclient.Client
	w         *blobclient.Writer
	committed bool
}

func (w *writer) Write(p []byte) (int, error) { return w.w.Write(p) }

// ReadFrom lets io.Copy fill the upload's message buffer directly.
func (w *writer) ReadFrom(r io.Reader) (int64, error) { return w.w.ReadFrom(r) }

// Commit makes the blob visible if it has size bytes and the digest
// expected; the blob service checks the digest, and a blob stored already
// is ErrAlreadyExists.
func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	if got := w.w.Offset(); got != size {
		return errdefs.InvalidArgument("blob %s: %d bytes were written, %d declared", expected, got, size).WithReason("SIZE_MISMATCH")
	}
	info, err := w.w.CommitDigest(ctx, expected)
	if err != nil {
		return err
	}
	w.committed = true
	if info.Size != size {
		return errdefs.Internal("blob %s was stored with %d bytes, %d written", expected, info.Size, size)
	}
	return nil
}

// Close ends the upload, aborting it unless it was committed.
func (w *writer) Close() error {
	err := w.w.Close()
	if !w.committed {
		// A fresh context: Close also runs after the caller's was cancelled.
		ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
		defer cancel()
		if aerr := w.c.AbortUpload(ctx, w.w.Ref()); aerr != nil && !errdefs.IsNotFound(aerr) {
			return aerr
		}
	}
	return err
}

// abortTimeout bounds the abort of an abandoned upload.
const abortTimeout = 10 * time.Second

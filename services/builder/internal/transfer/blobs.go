package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// StoreLayer copies a layer blob (compressed or not) from r into the blob
// store as it is, computing on the way its digest, its diff ID (the digest
// of the uncompressed tar) and Docker's diff size, and checking its tar
// entries. It commits the blob only when everything matches what is
// expected: want.Digest and want.Size when set, and wantDiffID when set.
// On any mismatch or error nothing is stored. what names the layer in errors.
func (s *Service) StoreLayer(ctx context.Context, r io.Reader, want ocispec.Descriptor, wantDiffID digest.Digest, what string) (image.Layer, error) {
	w, err := s.blobs.Writer(ctx, want.MediaType)
	if err != nil {
		return image.Layer{}, err
	}
	defer w.Close()

	pr, pw := io.Pipe()
	type scanned struct {
		diffID   digest.Digest
		diffSize int64
		c        compression.Format
		err      error
	}
	done := make(chan scanned, 1)
	go func() {
		var res scanned
		defer func() { done <- res }()
		d, err := compression.NewReader(pr, s.limits.Limits, what)
		if err != nil {
			res.err = err
			pr.CloseWithError(err)
			return
		}
		defer d.Close()
		res.c = d.Format
		if d.Format == compression.Uncompressed {
			// The diff ID is the blob's digest, which the upload checks:
			// hashing the bytes here too would only cost a pass.
			res.diffSize, res.err = scanTar(d, what)
			pr.CloseWithError(errOr(res.err, io.ErrClosedPipe))
			return
		}
		dg := digest.SHA256.Digester()
		res.diffSize, res.err = scanTar(io.TeeReader(d, dg.Hash()), what)
		if res.err == nil {
			// Drain what follows the compressed stream (nothing, normally).
			_, res.err = io.Copy(io.Discard, pr)
		}
		res.diffID = dg.Digest()
		pr.CloseWithError(errOr(res.err, io.ErrClosedPipe))
	}()

	// With the digest known, the blob store's check at commit is the one
	// that counts; otherwise the digest is computed here, beside the upload.
	sinks, pipeAt := []io.Writer{w, pw}, 1
	var dg digest.Digester
	if want.Digest == "" {
		dg = digest.SHA256.Digester()
		sinks, pipeAt = append(sinks, dg.Hash()), 1
	}
	size, copyErr := fanOut(r, sinks, pipeAt)
	pw.CloseWithError(errOr(copyErr, io.EOF))
	res := <-done
	if copyErr != nil {
		var se sinkErr
		if errors.As(copyErr, &se) && se.pipe && res.err != nil {
			return image.Layer{}, res.err // the scanner failed first; its error says why
		}
		return image.Layer{}, unwrapSink(copyErr)
	}
	if res.err != nil {
		return image.Layer{}, res.err
	}
	got := want.Digest
	if dg != nil {
		got = dg.Digest()
	}
	if res.c == compression.Uncompressed {
		res.diffID = got
	}
	if want.Size > 0 && size != want.Size {
		return image.Layer{}, errdefs.InvalidArgument("%s has %d bytes, its descriptor says %d", what, size, want.Size).
			WithReason("SIZE_MISMATCH")
	}
	if wantDiffID != "" && res.diffID != wantDiffID {
		return image.Layer{}, errdefs.InvalidArgument("%s does not match the diff ID its config lists: got %s, want %s", what, res.diffID, wantDiffID).
			WithReason("DIFF_ID_MISMATCH")
	}
	if err := w.Commit(ctx, size, got); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		if errdefs.IsInvalidArgument(err) {
			return image.Layer{}, errdefs.InvalidArgument("%s does not match its digest %s: %v", what, got, err).WithReason("DIGEST_MISMATCH")
		}
		return image.Layer{}, fmt.Errorf("storing %s: %w", what, err)
	}
	mt := want.MediaType
	if mt == "" {
		mt = layerMediaType(res.c)
	}
	return image.Layer{
		Blob:     ocispec.Descriptor{MediaType: mt, Digest: got, Size: size},
		DiffID:   res.diffID,
		DiffSize: res.diffSize,
	}, nil
}

// scanStored computes the diff ID and diff size of a layer already in the
// blob store, reading it back (no registry or archive bytes move).
func (s *Service) scanStored(ctx context.Context, blob ocispec.Descriptor, what string) (image.Layer, error) {
	rc, err := s.blobs.Open(ctx, blob.Digest)
	if err != nil {
		return image.Layer{}, err
	}
	defer rc.Close()
	d, err := compression.NewReader(rc, s.limits.Limits, what)
	if err != nil {
		return image.Layer{}, err
	}
	defer d.Close()
	dg := digest.SHA256.Digester()
	size, err := scanTar(io.TeeReader(d, dg.Hash()), what)
	if err != nil {
		return image.Layer{}, err
	}
	return image.Layer{Blob: blob, DiffID: dg.Digest(), DiffSize: size}, nil
}

func layerMediaType(c compression.Format) string {
	switch c {
	case compression.Gzip:
		return image.MediaTypeOCILayerGzip
	case compression.Zstd:
		return image.MediaTypeOCILayerZstd
	default:
		return image.MediaTypeOCILayer
	}
}

// sinkErr marks an error of one writer of a tee, so a failing blob store or
// checker is told apart from a failing source.
type sinkErr struct {
	err  error
	pipe bool
}

func (e sinkErr) Error() string { return e.err.Error() }
func (e sinkErr) Unwrap() error { return e.err }

func unwrapSink(err error) error {
	var se sinkErr
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

func errOr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

package blob

import (
	"context"
	"errors"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/mem"

	"github.com/strata-build/strata/lib/errdefs"
)

// Damaged is the error for a stored blob whose bytes are not the blob's:
// n bytes where size were stored, hashing to actual.
func Damaged(d digest.Digest, size, n int64, actual digest.Digest) error {
	if n != size {
		return errdefs.DataLoss("blob %s is damaged: %d bytes are stored, %d were committed", d, n, size).
			WithReason("BLOB_DAMAGED").WithDetail("digest", string(d))
	}
	return errdefs.DataLoss("blob %s is damaged: its stored bytes hash to %s", d, actual).
		WithReason("BLOB_DAMAGED").WithDetail("digest", string(d)).WithDetail("actual", string(actual))
}

// Verified returns a reader of the whole blob d of size bytes from rc that
// hashes the bytes as they pass: at their end it fails with ErrDataLoss
// (Damaged) when they are not the blob's. Its Close closes rc. Backends
// wrap whole-blob reads in it; a range cannot be checked this way, since
// a digest covers only the whole blob.
func Verified(rc io.ReadCloser, d digest.Digest, size int64) io.ReadCloser {
	return &verifiedReader{rc: rc, d: d, size: size, h: d.Algorithm().Hash()}
}

type verifiedReader struct {
	rc   io.ReadCloser
	d    digest.Digest
	size int64
	n    int64
	h    hash.Hash
	err  error // sticky once the end was checked
}

func (r *verifiedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.rc.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if errors.Is(err, io.EOF) {
		err = io.EOF
		if actual := digest.NewDigest(r.d.Algorithm(), r.h); r.n != r.size || actual != r.d {
			err = Damaged(r.d, r.size, r.n, actual)
		}
		r.err = err
	}
	return n, err
}

func (r *verifiedReader) Close() error { return r.rc.Close() }

// BufferReader is a reader that can also hand out its bytes in the buffers
// it read them into, sparing the copy Read makes: the blob store's Read
// sends such buffers as they are.
type BufferReader interface {
	io.Reader
	// ReadBuffer returns the next bytes, at least one and at most n, as a
	// buffer the caller frees; io.EOF after the last.
	ReadBuffer(n int) (mem.Buffer, error)
}

// Unverified returns the reader under a reader Verified made, and the
// digest and size it checks against; ok is false for any other reader. It
// is for a caller that hashes the bytes itself, beside its other work, and
// fails with Damaged when they are not the blob's, as the Verified reader
// would have: the blob store's Read hashes while it sends. Close the
// reader Verified returned, not this one.
func Unverified(rc io.Reader) (r io.Reader, d digest.Digest, size int64, ok bool) {
	v, ok := rc.(*verifiedReader)
	if !ok || v.n != 0 {
		return rc, "", 0, false
	}
	return v.rc, v.d, v.size, true
}

// Check reads the whole blob d from s and reports what it found: its
// description when its bytes are intact, ErrDataLoss when they are not,
// ErrNotFound when it is not stored, and the storage's error when it could
// not be read.
func Check(ctx context.Context, s Store, d digest.Digest) (Info, error) {
	rc, info, err := s.Open(ctx, d, 0, 0)
	if err != nil {
		return Info{}, err
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return info, err
	}
	return info, nil
}

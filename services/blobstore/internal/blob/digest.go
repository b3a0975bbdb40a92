package blob

import (
	_ "crypto/sha512" // sha512 digests, which OCI content may use
	"errors"
	"regexp"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// Algorithms are the digest algorithms the store holds, in digest order.
var Algorithms = []digest.Algorithm{digest.SHA256, digest.SHA512}

// HashOf returns the algorithm a writer hashes with: the declared digest's,
// or sha256 when the digest comes at commit (a commit with another
// algorithm then reads the bytes again).
func HashOf(declared digest.Digest) digest.Algorithm {
	if declared != "" {
		return declared.Algorithm()
	}
	return digest.SHA256
}

// ParseDigest checks that s is a digest this store can hold, "sha256:"
// followed by 64 lower-case hex digits or "sha512:" followed by 128, and
// returns it. Anything else is
// ErrInvalidArgument, so that no malformed digest ever reaches a path or a key.
func ParseDigest(s string) (digest.Digest, error) {
	d := digest.Digest(s)
	if err := ValidateDigest(d); err != nil {
		return "", err
	}
	return d, nil
}

// ValidateDigest is ParseDigest for a value that is already a digest.Digest.
func ValidateDigest(d digest.Digest) error {
	if d == "" {
		return errdefs.InvalidArgument("a digest is required").WithReason("INVALID_DIGEST")
	}
	if err := d.Validate(); err != nil {
		msg := "malformed"
		switch {
		case errors.Is(err, digest.ErrDigestUnsupported):
			msg = "unsupported algorithm"
		case errors.Is(err, digest.ErrDigestInvalidLength):
			msg = "wrong length"
		}
		return errdefs.InvalidArgument("invalid digest %q: %s (want sha256:<64 lower-case hex digits> or sha512:<128>)", string(d), msg).
			WithReason("INVALID_DIGEST").WithDetail("digest", string(d))
	}
	if d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return errdefs.InvalidArgument("invalid digest %q: only sha256 and sha512 are supported", string(d)).
			WithReason("INVALID_DIGEST").WithDetail("digest", string(d))
	}
	return nil
}

var refPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ValidateRef checks an upload ref: letters, digits and "._-", at most 128
// characters, and neither "." nor "..", since backends use refs in paths and
// keys.
func ValidateRef(ref string) error {
	if !refPattern.MatchString(ref) || ref == "." || ref == ".." {
		return errdefs.InvalidArgument("invalid upload ref %q: want 1 to 128 letters, digits or \"._-\"", ref).
			WithReason("INVALID_REF").WithDetail("ref", ref)
	}
	return nil
}

// ValidateWriterOptions checks the options of a new writer.
func ValidateWriterOptions(opts WriterOptions) error {
	if err := ValidateRef(opts.Ref); err != nil {
		return err
	}
	if opts.Expected != "" {
		if err := ValidateDigest(opts.Expected); err != nil {
			return err
		}
	}
	if opts.Size < -1 {
		return errdefs.InvalidArgument("invalid size %d for upload %q: want -1 (unknown) or more", opts.Size, opts.Ref).
			WithReason("INVALID_SIZE")
	}
	return nil
}

// CommitDigest returns the digest a commit checks against: the one declared
// at the start or the one given at commit, which must agree when both are
// given.
func CommitDigest(declared, atCommit digest.Digest) (digest.Digest, error) {
	switch {
	case atCommit == "" && declared == "":
		return "", errdefs.InvalidArgument("commit needs the blob's digest: none was declared").WithReason("INVALID_DIGEST")
	case atCommit == "":
		return declared, nil
	}
	if err := ValidateDigest(atCommit); err != nil {
		return "", err
	}
	if declared != "" && atCommit != declared {
		return "", DigestMismatch(declared, atCommit)
	}
	return atCommit, nil
}

// ValidateRange checks a read range against a blob's size and returns the
// number of bytes to read: length, or what is left after offset when length
// is 0 or reaches past the end.
func ValidateRange(d digest.Digest, size, offset, length int64) (int64, error) {
	if offset < 0 || length < 0 {
		return 0, errdefs.InvalidArgument("invalid range of %s: offset %d and length %d must not be negative", d, offset, length).
			WithReason("INVALID_RANGE")
	}
	if offset > size {
		return 0, errdefs.InvalidArgument("invalid range of %s: offset %d is past the end (%d bytes)", d, offset, size).
			WithReason("INVALID_RANGE")
	}
	if rest := size - offset; length == 0 || length > rest {
		return rest, nil
	}
	return length, nil
}

// SizeMismatch is the error for content whose size is not the declared one.
func SizeMismatch(d digest.Digest, expected, actual int64) error {
	return errdefs.InvalidArgument("size mismatch for %s: expected %d bytes, got %d", d, expected, actual).
		WithReason("SIZE_MISMATCH").WithDetail("digest", string(d))
}

// TooLong is the error for a write that passes the declared size.
func TooLong(ref string, expected, actual int64) error {
	return errdefs.InvalidArgument("size mismatch for upload %q: expected %d bytes, got at least %d", ref, expected, actual).
		WithReason("SIZE_MISMATCH").WithDetail("ref", ref)
}

// DigestMismatch is the error for content that does not hash to its digest.
func DigestMismatch(expected, actual digest.Digest) error {
	return errdefs.InvalidArgument("digest mismatch: expected %s, got %s", expected, actual).
		WithReason("DIGEST_MISMATCH").
		WithDetail("expected", string(expected)).
		WithDetail("actual", string(actual))
}

// Verify checks what a writer received, n bytes hashing to actual, against
// the declared size (-1: unknown) and the expected digest.
func Verify(expected digest.Digest, size int64, actual digest.Digest, n int64) error {
	if size >= 0 && n != size {
		return SizeMismatch(expected, size, n)
	}
	if actual != expected {
		return DigestMismatch(expected, actual)
	}
	return nil
}

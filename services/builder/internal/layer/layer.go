// Package layer turns filesystem changes into OCI image layers and back.
//
// Three operations make up the pipeline:
//
//   - Diff writes the changes an overlay upper directory holds as an OCI layer
//     tar (overlay whiteouts become ".wh." entries).
//   - Write takes an uncompressed layer tar and, in one pass, compresses it with
//     parallel gzip, hashes the compressed and the uncompressed bytes, counts
//     Docker's diff size, and streams the blob into a BlobWriter while it is
//     produced.
//   - Unpack applies a layer blob (gzip, zstd or plain tar) to a directory, in
//     the form an overlay lower directory needs, without ever touching
//     anything outside that directory.
package layer

import (
	"context"
	"io"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of the layers this package reads and writes.
const (
	MediaTypeGzip = ocispec.MediaTypeImageLayerGzip // what Write produces
	MediaTypeZstd = ocispec.MediaTypeImageLayerZstd
	MediaTypeTar  = ocispec.MediaTypeImageLayer
	// MediaTypeDockerGzip is the layer type of Docker's v2 schema 2 manifests.
	MediaTypeDockerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Descriptor describes a stored layer blob. It is a value: nothing in it
// changes once Write returned it.
type Descriptor struct {
	// MediaType of the blob, MediaTypeGzip for the layers Write produces.
	MediaType string
	// Digest and Size of the blob as stored (compressed).
	Digest digest.Digest
	Size   int64
	// DiffID is the digest of the uncompressed tar, as listed in an image
	// config's rootfs.diff_ids.
	DiffID digest.Digest
	// DiffSize is the size Docker reports for the layer ("docker history"
	// SIZE, the image's Size): the bytes of regular files plus the length of
	// every symlink's target, each hard-linked file counted once.
	DiffSize int64
}

// OCI returns the descriptor as it appears in an OCI manifest.
func (d Descriptor) OCI() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}

// BlobWriter receives a blob's bytes while they are produced. The digest and
// size are known only once the last byte has been written, so they are given
// to Commit, which must verify them and make the blob visible only if they
// match. Commit returns an error matching errdefs.ErrAlreadyExists when the
// blob is stored already; Write treats that as success. Close releases the
// writer and discards the upload unless it was committed; it is always called.
type BlobWriter interface {
	io.Writer
	Commit(ctx context.Context, size int64, expected digest.Digest) error
	Close() error
}

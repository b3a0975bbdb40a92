package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	digest "github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// zstdMaxWindow caps the window a zstd frame may declare, so that a crafted
// frame cannot make the decoder allocate gigabytes before the first byte.
const zstdMaxWindow = 128 << 20

// Unpacked describes a layer Unpack applied.
type Unpacked struct {
	// DiffID is the digest of the uncompressed tar.
	DiffID digest.Digest
	// DiffSize is Docker's size of the layer (see Descriptor.DiffSize).
	DiffSize int64
}

// UnpackOpt configures Unpack.
type UnpackOpt func(*unpackOptions)

type unpackOptions struct {
	diffID     digest.Digest
	maxBytes   int64
	maxEntries int64
}

// WithDiffID makes Unpack verify that the uncompressed tar has this digest
// (INVALID_ARGUMENT otherwise). The directory then holds unverified content
// and must be discarded.
func WithDiffID(d digest.Digest) UnpackOpt {
	return func(o *unpackOptions) { o.diffID = d }
}

// WithMaxBytes stops Unpack with RESOURCE_EXHAUSTED once the uncompressed tar
// exceeds n bytes (decompression bombs).
func WithMaxBytes(n int64) UnpackOpt {
	return func(o *unpackOptions) { o.maxBytes = n }
}

// WithMaxEntries stops Unpack with RESOURCE_EXHAUSTED once the tar holds
// more than n entries (a layer of a million empty files).
func WithMaxEntries(n int64) UnpackOpt {
	return func(o *unpackOptions) { o.maxEntries = n }
}

// Unpack applies a layer blob, gzip- or zstd-compressed or a plain tar (told
// apart by their magic numbers), to dir in the form an overlay lower directory
// needs: ".wh.<name>" entries become character devices 0/0 and
// ".wh..wh..opq" marks its directory opaque (trusted.overlay.opaque=y).
//
// Entry names and link targets are resolved inside dir as if it were "/":
// ".." and absolute names are re-rooted, symlinks and hard links never lead a
// write outside dir (containerd's archive.Apply). Owners, modes, xattrs and
// device nodes are kept, so Unpack needs root. On error dir holds a partial
// layer; the caller unpacks into a private directory and discards it.
func Unpack(ctx context.Context, blob io.Reader, dir string, opts ...UnpackOpt) (Unpacked, error) {
	var o unpackOptions
	for _, opt := range opts {
		opt(&o)
	}
	tarStream, closeFn, err := decompress(sourceReader{blob})
	if err != nil {
		return Unpacked{}, unpackError(err)
	}
	defer closeFn()

	if o.maxBytes > 0 {
		tarStream = &limitReader{r: tarStream, n: o.maxBytes}
	}
	diffID := digest.SHA256.Digester()
	tarStream = io.TeeReader(tarStream, diffID.Hash())

	var size, entries int64
	count := func(hdr *tar.Header) (bool, error) {
		if err := checkWhiteout(hdr.Name); err != nil {
			return false, err
		}
		if entries++; o.maxEntries > 0 && entries > o.maxEntries {
			return false, errdefs.ResourceExhausted("layer holds more than %d entries", o.maxEntries).WithReason("LAYER_TOO_MANY_ENTRIES")
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			size += hdr.Size
		case tar.TypeSymlink:
			size += int64(len(hdr.Linkname))
		}
		return true, nil
	}
	if _, err := archive.Apply(ctx, dir, tarStream,
		archive.WithConvertWhiteout(archive.OverlayConvertWhiteout),
		archive.WithFilter(count),
	); err != nil {
		return Unpacked{}, unpackError(err)
	}
	// The tar may be followed by padding; the diff ID covers it.
	if _, err := io.Copy(io.Discard, tarStream); err != nil {
		return Unpacked{}, unpackError(err)
	}
	got := diffID.Digest()
	if o.diffID != "" && got != o.diffID {
		return Unpacked{}, errdefs.InvalidArgument("layer content has diff ID %s, want %s", got, o.diffID).
			WithReason("DIFF_ID_MISMATCH")
	}
	return Unpacked{DiffID: got, DiffSize: size}, nil
}

// checkWhiteout refuses whiteouts whose target is the directory itself or
// its parent (".wh..", ".wh..."): applied, they would wipe out more than one
// name (containerd's validateWhiteout, with an error that says so).
func checkWhiteout(name string) error {
	base := path.Base(strings.TrimSuffix(name, "/"))
	if target, ok := strings.CutPrefix(base, whiteoutPrefix); ok && (target == "" || target == "." || target == "..") {
		return errdefs.InvalidArgument("malformed layer: whiteout %q names no file", name)
	}
	return nil
}

func unpackError(err error) error {
	var (
		src  *sourceError
		link *os.LinkError
	)
	switch {
	case errors.As(err, &src):
		return fmt.Errorf("reading layer: %w", src.err)
	case errors.Is(err, errdefs.ErrResourceExhausted), errdefs.IsInvalidArgument(err):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong), errors.Is(err, tar.ErrInsecurePath), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, pgzip.ErrHeader), errors.Is(err, pgzip.ErrChecksum):
		return errdefs.InvalidArgument("malformed layer: %v", err)
	case errors.As(err, &link) && errors.Is(err, os.ErrNotExist):
		return errdefs.InvalidArgument("malformed layer: hard link %s to a file not in the layer", link.New)
	}
	return fmt.Errorf("unpacking layer: %w", err)
}

// sourceError marks a failure to read the blob itself, so that it is not
// taken for malformed content.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

// decodeReader reports what a decompressor fails on as malformed content,
// unless the blob could not be read.
type decodeReader struct {
	r      io.Reader
	format string
}

func (d decodeReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	var src *sourceError
	if err != nil && err != io.EOF && !errors.As(err, &src) {
		err = errdefs.InvalidArgument("malformed %s layer: %v", d.format, err)
	}
	return n, err
}

// decompress returns the tar stream inside blob.
func decompress(blob io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(blob, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := pgzip.NewReaderN(br, 1<<20, 4)
		if err != nil {
			var src *sourceError
			if errors.As(err, &src) {
				return nil, nil, err
			}
			return nil, nil, errdefs.InvalidArgument("malformed gzip layer: %v", err)
		}
		return decodeReader{zr, "gzip"}, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, errdefs.InvalidArgument("malformed zstd layer: %v", err)
		}
		return decodeReader{zr, "zstd"}, zr.Close, nil
	}
	return br, func() {}, nil
}

// limitReader fails with RESOURCE_EXHAUSTED once more than n bytes were read.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, l.err()
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, l.err()
	}
	return n, err
}

func (l *limitReader) err() error {
	return errdefs.ResourceExhausted("layer exceeds the uncompressed size limit").WithReason("LAYER_TOO_LARGE")
}

package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/pkg/archive"
	digest "github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
)

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
	limits     compression.Limits
	maxEntries int64
}

// WithDiffID makes Unpack verify that the uncompressed tar has this digest
// (INVALID_ARGUMENT otherwise). The directory then holds unverified content
// and must be discarded.
func WithDiffID(d digest.Digest) UnpackOpt {
	return func(o *unpackOptions) { o.diffID = d }
}

// WithLimits bounds the layer's decompression (decompression bombs); the
// compression package's defaults otherwise.
func WithLimits(l compression.Limits) UnpackOpt {
	return func(o *unpackOptions) { o.limits = l }
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
	tarStream, err := compression.NewReader(sourceReader{blob}, o.limits, "layer")
	if err != nil {
		return Unpacked{}, unpackError(err, "layer")
	}
	defer tarStream.Close()
	diffID := digest.SHA256.Digester()
	tr := io.TeeReader(tarStream, diffID.Hash())
	size, err := apply(ctx, tr, dir, overlayWhiteout, o.maxEntries, "layer")
	if err != nil {
		return Unpacked{}, unpackError(err, "layer")
	}
	// The tar may be followed by padding; the diff ID covers it.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return Unpacked{}, unpackError(err, "layer")
	}
	got := diffID.Digest()
	if o.diffID != "" && got != o.diffID {
		return Unpacked{}, errdefs.InvalidArgument("layer content has diff ID %s, want %s", got, o.diffID).
			WithReason("DIFF_ID_MISMATCH")
	}
	return Unpacked{DiffID: got, DiffSize: size}, nil
}

// Extract applies a local archive (a tar, plain or compressed as Unpack
// reads them) to dir as Docker's ADD does: the archive's owners, modes and
// times are kept, and ".wh." names are ordinary files, not whiteouts. Names
// and links resolve inside dir exactly as in Unpack, through the same
// extractor, with the same bounds. It reports false, having written
// nothing, when the stream is not a tar archive (ADD then copies the file
// as it is).
func Extract(ctx context.Context, r io.Reader, dir string, opts ...UnpackOpt) (bool, error) {
	return ExtractInto(ctx, r, func() (string, error) { return dir, nil }, opts...)
}

// ExtractInto is Extract into the directory dir returns, which it calls
// only once it knows the stream is an archive: ADD of a plain file to a
// path without a trailing slash writes the file at that path, so the
// destination directory must not be made before then.
func ExtractInto(ctx context.Context, r io.Reader, dir func() (string, error), opts ...UnpackOpt) (bool, error) {
	var o unpackOptions
	for _, opt := range opts {
		opt(&o)
	}
	tarStream, err := compression.NewReader(sourceReader{r}, o.limits, "archive")
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			return false, nil // not a stream of a format it claims: a plain file
		}
		return false, unpackError(err, "archive")
	}
	defer tarStream.Close()
	// Docker calls a file an archive when its first tar header reads. That
	// header may span more than a block (a long name or link target in a
	// PAX or GNU header before it, a sparse map), so it is read from the
	// stream itself, and what it took is read again by the extractor.
	var head bytes.Buffer
	if _, err := tar.NewReader(io.TeeReader(io.LimitReader(tarStream, maxFirstHeader), &head)).Next(); err != nil {
		return false, nil
	}
	d, err := dir()
	if err != nil {
		return false, err
	}
	keep := func(*tar.Header, string) (bool, error) { return true, nil }
	if _, err := apply(ctx, io.MultiReader(&head, tarStream), d, keep, o.maxEntries, "archive"); err != nil {
		return true, unpackError(err, "archive")
	}
	return true, nil
}

// maxFirstHeader bounds what Extract reads, and holds, to find an
// archive's first header: archive/tar takes up to 1 MiB for each PAX
// header, GNU long name or link and sparse map, but any number of them in
// a row.
const maxFirstHeader = 8 << 20

// overlayWhiteout converts whiteouts as archive.OverlayConvertWhiteout does
// and reports one that hides a name its own layer holds as malformed input:
// whiteouts apply to lower layers only (image-spec), and the overlay
// whiteout cannot take the place of what the layer put there.
func overlayWhiteout(hdr *tar.Header, p string) (bool, error) {
	write, err := archive.OverlayConvertWhiteout(hdr, p)
	if errors.Is(err, fs.ErrExist) {
		return false, errdefs.InvalidArgument("malformed layer: whiteout %q hides a name the layer itself holds", hdr.Name)
	}
	return write, err
}

// apply extracts a tar stream into dir through containerd's archive.Apply,
// counting entries against maxEntries (0: no bound) and returning Docker's
// diff size of what it applied.
func apply(ctx context.Context, tarStream io.Reader, dir string, whiteouts archive.ConvertWhiteout, maxEntries int64, what string) (int64, error) {
	var size, entries int64
	count := func(hdr *tar.Header) (bool, error) {
		if err := checkWhiteout(hdr.Name, what); err != nil {
			return false, err
		}
		if entries++; maxEntries > 0 && entries > maxEntries {
			return false, errdefs.ResourceExhausted("%s holds more than %d entries", what, maxEntries).WithReason("LAYER_TOO_MANY_ENTRIES")
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			if sparse(hdr) {
				return false, errdefs.InvalidArgument("%s entry %q is a sparse file, which is not extracted: its holes would be written out in full, past any bound on the %s's size", what, hdr.Name, what)
			}
			size += hdr.Size
		case tar.TypeSymlink:
			size += int64(len(hdr.Linkname))
		case tar.TypeDir, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo, tar.TypeXGlobalHeader:
		default:
			// Types containerd's extractor cannot create: contiguous
			// files, volume headers, GNU dump directories…
			return false, errdefs.InvalidArgument("malformed %s: entry %q has type %q, not a file, directory, link, device or FIFO", what, hdr.Name, hdr.Typeflag)
		}
		return true, nil
	}
	_, err := archive.Apply(ctx, dir, tarStream, archive.WithConvertWhiteout(whiteouts), archive.WithFilter(count))
	return size, hideRoot(err, dir)
}

// rootedError is an extraction error whose message names paths inside the
// root ("/etc/x"), not where the root is on the builder's host: errors go
// back to whoever sent the archive.
type rootedError struct {
	msg string
	err error
}

func (e *rootedError) Error() string { return e.msg }
func (e *rootedError) Unwrap() error { return e.err }

// hideRoot rewrites the host paths under dir that err names (containerd's
// messages and the *os.LinkError unpackError reports) as paths in the root.
func hideRoot(err error, dir string) error {
	if err == nil {
		return nil
	}
	dir = filepath.Clean(dir)
	rel := func(p string) string {
		if r, err := filepath.Rel(dir, p); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
			if r == "." {
				return "/"
			}
			return "/" + r
		}
		return p
	}
	inner := err
	var link *os.LinkError
	if errors.As(err, &link) {
		c := *link
		c.Old, c.New = rel(c.Old), rel(c.New)
		inner = &c
	}
	msg := strings.ReplaceAll(err.Error(), dir+"/", "/")
	msg = strings.ReplaceAll(msg, dir, "/")
	if msg == err.Error() && inner == err {
		return err
	}
	return &rootedError{msg: msg, err: inner}
}

// sparse reports whether an entry is a GNU sparse file (old GNU format,
// PAX formats 0.x and 1.0), whose size archive/tar reports, and reads
// back, with its holes.
func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// checkWhiteout refuses whiteouts whose target is the directory itself or
// its parent (".wh..", ".wh..."): applied, they would wipe out more than one
// name (containerd's validateWhiteout, with an error that says so).
func checkWhiteout(name, what string) error {
	base := path.Base(strings.TrimSuffix(name, "/"))
	if target, ok := strings.CutPrefix(base, whiteoutPrefix); ok && (target == "" || target == "." || target == "..") {
		return errdefs.InvalidArgument("malformed %s: whiteout %q names no file", what, name)
	}
	return nil
}

// unpackError classifies what extracting a layer or archive (what) failed on.
func unpackError(err error, what string) error {
	var (
		src  *sourceError
		link *os.LinkError
	)
	switch {
	case errors.As(err, &src):
		return fmt.Errorf("reading %s: %w", what, src.err)
	case errors.Is(err, errdefs.ErrResourceExhausted), errdefs.IsInvalidArgument(err):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong), errors.Is(err, tar.ErrInsecurePath), errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.InvalidArgument("malformed %s: %v", what, err)
	case errors.As(err, &link) && errors.Is(err, os.ErrNotExist):
		return errdefs.InvalidArgument("malformed %s: hard link %s to a file not in the %s", what, link.New, what)
	case errors.As(err, &link) && errors.Is(err, syscall.EPERM):
		return errdefs.InvalidArgument("malformed %s: hard link %s to a directory", what, link.New)
	case errors.Is(err, os.ErrNotExist):
		// The root exists: what went missing under it, a later entry
		// replaced (a directory by a symlink, before its times are set).
		return errdefs.InvalidArgument("malformed %s: %v", what, err)
	}
	return fmt.Errorf("unpacking %s: %w", what, err)
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

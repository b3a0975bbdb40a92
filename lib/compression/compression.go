// Package compression reads the compressed streams Strata takes in —
// layers, ADD archives, import tarballs, load archives, pulled blobs —
// through one decompressor with one set of bounds: a crafted stream can
// neither make a decoder allocate past a fixed window nor expand past the
// limits, and every failure is an errdefs kind naming the input.
package compression

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/therootcompany/xz"

	"github.com/strata-build/strata/lib/errdefs"
)

// Format is the compression of a stream.
type Format int

// The formats streams are read in.
const (
	Uncompressed Format = iota
	Gzip
	Zstd
	Bzip2
	Xz
)

func (f Format) String() string {
	return [...]string{"uncompressed", "gzip", "zstd", "bzip2", "xz"}[f]
}

var magics = []struct {
	f     Format
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b, 0x08}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Bzip2, []byte{0x42, 0x5a, 0x68}},
	{Xz, []byte{0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00}},
}

// Detect peeks at the start of r to tell its format.
func Detect(r *bufio.Reader) Format {
	head, _ := r.Peek(6)
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.f
		}
	}
	return Uncompressed
}

// MaxWindow caps the window a zstd frame, or the dictionary an xz block,
// may declare: decoders allocate it up front, so a frame declaring 2 GiB is
// a memory bomb. Real streams use a few MiB; 128 MiB is zstd's maximum for
// --long, and xz -9 uses 64 MiB.
const MaxWindow = 128 << 20

// Limits bound what a stream may expand to. A zero field takes its default.
type Limits struct {
	// MaxSize is the most bytes a stream may hold uncompressed.
	MaxSize int64
	// MaxExpansion is the most a compressed stream may expand (uncompressed
	// bytes per compressed byte), checked once a stream has produced
	// ExpansionFloor bytes; real layers stay far below it, bombs far above.
	MaxExpansion int64
	// ExpansionFloor is the output size below which MaxExpansion is not
	// checked, so that small, very compressible streams pass.
	ExpansionFloor int64
}

// Default limits.
const (
	DefaultMaxSize        = 64 << 30
	DefaultMaxExpansion   = 200
	DefaultExpansionFloor = 256 << 20
)

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxExpansion <= 0 {
		l.MaxExpansion = DefaultMaxExpansion
	}
	if l.ExpansionFloor <= 0 {
		l.ExpansionFloor = DefaultExpansionFloor
	}
	return l
}

// Reader reads the uncompressed bytes of a stream.
type Reader struct {
	io.Reader
	// Format is the stream's compression.
	Format Format
	close  func()
}

// Close releases the decoder. It does not close the source.
func (r *Reader) Close() error {
	if r.close != nil {
		r.close()
	}
	return nil
}

// NewReader returns the uncompressed bytes of r (gzip, zstd, bzip2, xz or
// plain, told apart by their magic numbers). What the decoder fails on is
// INVALID_ARGUMENT, and expansion past the limits RESOURCE_EXHAUSTED (reason
// DECOMPRESSION_LIMIT), each naming what; errors reading r itself pass
// through unchanged.
func NewReader(r io.Reader, limits Limits, what string) (*Reader, error) {
	limits = limits.WithDefaults()
	src := &source{r: r}
	br := bufio.NewReaderSize(src, 1<<20)
	f := Detect(br)
	if src.err != nil {
		return nil, src.err
	}
	var out io.Reader
	var closeFn func()
	switch f {
	case Uncompressed:
		out = br
	case Gzip:
		zr, err := pgzip.NewReader(br)
		if err != nil {
			return nil, decodeError(err, f, what)
		}
		out, closeFn = zr, func() { zr.Close() }
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(MaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, decodeError(err, f, what)
		}
		out, closeFn = zr, zr.Close
	case Bzip2:
		out = bzip2.NewReader(br)
	case Xz:
		zr, err := xz.NewReader(br, MaxWindow)
		if err != nil {
			return nil, decodeError(err, f, what)
		}
		out = zr
	}
	if f != Uncompressed {
		out = decoded{r: out, f: f, what: what}
	}
	lr := &limited{r: out, compressed: src, limits: limits, what: what, checkRatio: f != Uncompressed}
	return &Reader{Reader: lr, Format: f, close: closeFn}, nil
}

// source counts the compressed bytes read and remembers a read error, so
// that a failing source is not taken for a corrupt stream.
type source struct {
	r   io.Reader
	n   int64
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
		err = &sourceError{err}
	}
	return n, err
}

// sourceError carries an error of the source through the decoders.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// decoded reports what a decoder fails on as malformed content, unless the
// source failed.
type decoded struct {
	r    io.Reader
	f    Format
	what string
}

func (d decoded) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = decodeError(err, d.f, d.what)
	}
	return n, err
}

func decodeError(err error, f Format, what string) error {
	var src *sourceError
	switch {
	case errors.As(err, &src):
		return src.err
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, xz.ErrMemlimit):
		return errdefs.ResourceExhausted("%s: %s stream needs a window over the %d MiB limit", what, f, MaxWindow>>20).
			WithReason("DECOMPRESSION_LIMIT")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.InvalidArgument("%s: %s stream is truncated", what, f)
	}
	return errdefs.InvalidArgument("%s: corrupt %s stream: %v", what, f, err)
}

// limited fails once the uncompressed bytes exceed MaxSize, or (past
// ExpansionFloor) MaxExpansion times the compressed bytes read.
type limited struct {
	r          io.Reader
	compressed *source
	limits     Limits
	what       string
	checkRatio bool
	n          int64
}

func (l *limited) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if src, ok := err.(*sourceError); ok { // a plain stream's source failed
		err = src.err
	}
	l.n += int64(n)
	if l.n > l.limits.MaxSize {
		return 0, errdefs.ResourceExhausted("%s expands to more than %d bytes, the limit for one layer or archive (--max-layer-size)",
			l.what, l.limits.MaxSize).WithReason("DECOMPRESSION_LIMIT")
	}
	if l.checkRatio && l.n > l.limits.ExpansionFloor && l.n > l.limits.MaxExpansion*l.compressed.n {
		return 0, errdefs.ResourceExhausted("%s expands more than %d-fold (%d bytes from %d compressed), the limit against decompression bombs (--max-expansion)",
			l.what, l.limits.MaxExpansion, l.n, l.compressed.n).WithReason("DECOMPRESSION_LIMIT")
	}
	return n, err
}

package transfer

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"

	"github.com/strata-build/strata/lib/errdefs"
)

// Compression is the compression of a stream.
type Compression int

// The compressions streams are read in.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
	Bzip2
	Xz
)

func (c Compression) String() string {
	return [...]string{"uncompressed", "gzip", "zstd", "bzip2", "xz"}[c]
}

var magics = []struct {
	c     Compression
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b, 0x08}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Bzip2, []byte{0x42, 0x5a, 0x68}},
	{Xz, []byte{0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00}},
}

// detect peeks at the start of r to tell its compression.
func detect(r *bufio.Reader) Compression {
	head, _ := r.Peek(6)
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.c
		}
	}
	return Uncompressed
}

// zstdMaxWindow caps the window a zstd frame may declare: the decoder would
// allocate it up front, so a frame declaring 2 GiB is a memory bomb. Layers
// are compressed with windows of at most a few MiB; 128 MiB is zstd's
// default maximum for --long.
const zstdMaxWindow = 128 << 20

// decompressed is a decompressing reader with bounded expansion.
type decompressed struct {
	io.Reader
	close func()
	c     Compression
}

func (d *decompressed) Close() error {
	if d.close != nil {
		d.close()
	}
	return nil
}

// decompress returns the uncompressed bytes of r (gzip, zstd, bzip2 or
// plain), failing with RESOURCE_EXHAUSTED when they exceed the limits (what
// names the input in messages).
func decompress(r io.Reader, limits Limits, what string) (*decompressed, error) {
	compressed := &countReader{r: r}
	br := bufio.NewReaderSize(compressed, 1<<20)
	c := detect(br)
	var out io.Reader
	var closeFn func()
	switch c {
	case Uncompressed:
		out = br
	case Gzip:
		zr, err := pgzip.NewReader(br)
		if err != nil {
			return nil, errdefs.InvalidArgument("%s: reading gzip: %v", what, err)
		}
		out, closeFn = gzipErrors{zr, what}, func() { zr.Close() }
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, errdefs.InvalidArgument("%s: reading zstd: %v", what, err)
		}
		out, closeFn = zstdErrors{zr, what}, zr.Close
	case Bzip2:
		out = bzip2.NewReader(br)
	case Xz:
		return nil, errdefs.InvalidArgument("%s is xz-compressed; Strata reads plain, gzip, zstd and bzip2 tarballs", what)
	}
	lr := &limitedReader{r: out, compressed: compressed, limits: limits, what: what, checkRatio: c != Uncompressed}
	return &decompressed{Reader: lr, close: closeFn, c: c}, nil
}

type gzipErrors struct {
	r    io.Reader
	what string
}

func (g gzipErrors) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && !isClassified(err) {
		err = errdefs.InvalidArgument("%s: corrupt gzip stream: %v", g.what, err)
	}
	return n, err
}

type zstdErrors struct {
	r    *zstd.Decoder
	what string
}

func (z zstdErrors) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if err != nil && err != io.EOF && !isClassified(err) {
		if err == zstd.ErrWindowSizeExceeded || err == zstd.ErrDecoderSizeExceeded {
			err = errdefs.ResourceExhausted("%s: zstd frame needs a window over the %d MiB limit", z.what, zstdMaxWindow>>20).
				WithReason("DECOMPRESSION_LIMIT")
		} else {
			err = errdefs.InvalidArgument("%s: corrupt zstd stream: %v", z.what, err)
		}
	}
	return n, err
}

func isClassified(err error) bool {
	var e *errdefs.Error
	return errors.As(err, &e)
}

// countReader counts the bytes read from r.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// limitedReader fails once the uncompressed bytes exceed MaxLayerSize, or
// (past ExpansionFloor) MaxExpansion times the compressed bytes read.
type limitedReader struct {
	r          io.Reader
	compressed *countReader
	limits     Limits
	what       string
	checkRatio bool
	n          int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.limits.MaxLayerSize {
		return 0, errdefs.ResourceExhausted("%s expands to more than %d bytes, the limit for one layer (--max-layer-size)",
			l.what, l.limits.MaxLayerSize).WithReason("DECOMPRESSION_LIMIT")
	}
	if l.checkRatio && l.n > l.limits.ExpansionFloor && l.n > l.limits.MaxExpansion*l.compressed.n {
		return 0, errdefs.ResourceExhausted("%s expands more than %d-fold (%d bytes from %d compressed), the limit against decompression bombs (--max-expansion)",
			l.what, l.limits.MaxExpansion, l.n, l.compressed.n).WithReason("DECOMPRESSION_LIMIT")
	}
	return n, err
}

// errorf wraps err with context while keeping its errdefs kind.
func errorf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}

package compression

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/strata-build/strata/lib/errdefs"
)

func compressWith(t *testing.T, f Format, b []byte, args ...string) []byte {
	t.Helper()
	switch f {
	case Uncompressed:
		return b
	case Gzip:
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	case Zstd:
		zw, _ := zstd.NewWriter(nil)
		return zw.EncodeAll(b, nil)
	}
	tool := f.String()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed", tool)
	}
	cmd := exec.Command(tool, append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out
}

func TestNewReaderReadsEveryFormat(t *testing.T) {
	data := bytes.Repeat([]byte("strata layer bytes\n"), 10000)
	for _, f := range []Format{Uncompressed, Gzip, Zstd, Bzip2, Xz} {
		t.Run(f.String(), func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(compressWith(t, f, data)), Limits{}, "test stream")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Format != f {
				t.Errorf("Format = %v, want %v", r.Format, f)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("ReadAll = %d bytes, %v; want the %d bytes compressed", len(got), err, len(data))
			}
		})
	}
}

func TestNewReaderBoundsExpansion(t *testing.T) {
	zeros := make([]byte, 4<<20)
	for _, f := range []Format{Gzip, Zstd, Bzip2, Xz} {
		t.Run(f.String(), func(t *testing.T) {
			for name, limits := range map[string]Limits{
				"size":  {MaxSize: 1 << 20},
				"ratio": {MaxExpansion: 10, ExpansionFloor: 1 << 20},
			} {
				r, err := NewReader(bytes.NewReader(compressWith(t, f, zeros)), limits, "bomb.tar")
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.Copy(io.Discard, r)
				if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "bomb.tar") {
					t.Errorf("%s limit: reading 4 MiB of zeros = %v, want RESOURCE_EXHAUSTED naming the input", name, err)
				}
			}
		})
	}
}

func TestNewReaderRefusesHugeWindows(t *testing.T) {
	// xz --lzma2=dict=1536MiB declares a dictionary the decoder would
	// allocate whole.
	b := compressWith(t, Xz, []byte("small"), "--lzma2=dict=1536MiB")
	r, err := NewReader(bytes.NewReader(b), Limits{}, "big-window.xz")
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("xz with a 1.5 GiB dictionary = %v, want RESOURCE_EXHAUSTED", err)
	}
}

func TestNewReaderReportsCorruptStreams(t *testing.T) {
	good := bytes.Repeat([]byte("0123456789"), 1000)
	for _, f := range []Format{Gzip, Zstd, Bzip2, Xz} {
		t.Run(f.String(), func(t *testing.T) {
			b := compressWith(t, f, good)
			truncated := b[:len(b)/2]
			r, err := NewReader(bytes.NewReader(truncated), Limits{}, "cut.tar")
			if err == nil {
				_, err = io.ReadAll(r)
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "cut.tar") {
				t.Errorf("a truncated %s stream = %v, want INVALID_ARGUMENT naming the input", f, err)
			}
		})
	}
}

type failing struct{ r io.Reader }

var errSource = errdefs.Unavailable("the blob store went away")

func (f *failing) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errSource
	}
	return n, err
}

func TestNewReaderPassesSourceErrorsThrough(t *testing.T) {
	data := bytes.Repeat([]byte("abc"), 100000)
	for _, f := range []Format{Uncompressed, Gzip, Zstd} {
		b := compressWith(t, f, data)
		r, err := NewReader(&failing{bytes.NewReader(b[:len(b)/2])}, Limits{}, "layer")
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("%s: a failing source = %v, want its UNAVAILABLE", f, err)
		}
	}
}

package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

type entry struct {
	hdr  tar.Header
	body string
}

func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		entries  []entry
		padding  int
		diffSize int64
	}{
		{
			// The nginx image's log links: docker history shows 22B.
			name: "symlinks",
			entries: []entry{
				{hdr: tar.Header{Name: "var/", Typeflag: tar.TypeDir, Mode: 0o755}},
				{hdr: tar.Header{Name: "var/log/", Typeflag: tar.TypeDir, Mode: 0o755}},
				{hdr: tar.Header{Name: "var/log/access.log", Typeflag: tar.TypeSymlink, Linkname: "/dev/stdout"}},
				{hdr: tar.Header{Name: "var/log/error.log", Typeflag: tar.TypeSymlink, Linkname: "/dev/stderr"}},
			},
			diffSize: 22,
		},
		{
			name: "files, a hard link counted once, a whiteout, a device",
			entries: []entry{
				{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg}, body: "hello"},
				{hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}},
				{hdr: tar.Header{Name: ".wh.gone", Typeflag: tar.TypeReg}},
				{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
				{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg}, body: string(bytes.Repeat([]byte("x"), 3<<20))},
			},
			diffSize: 5 + 3<<20,
		},
		{
			name:     "GNU tar record padding after the end marker",
			entries:  []entry{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg}, body: "data"}},
			padding:  8192,
			diffSize: 4,
		},
		{name: "empty layer", diffSize: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := append(makeTar(t, tc.entries...), make([]byte, tc.padding)...)
			blob := &memBlob{}
			desc, err := Write(context.Background(), blob, bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			if !blob.committed || !blob.closed {
				t.Errorf("blob committed=%v closed=%v, want both", blob.committed, blob.closed)
			}
			want := Descriptor{
				MediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
				Digest:    digest.FromBytes(blob.buf.Bytes()),
				Size:      int64(blob.buf.Len()),
				DiffID:    digest.FromBytes(raw),
				DiffSize:  tc.diffSize,
			}
			if desc != want {
				t.Errorf("Write = %+v, want %+v", desc, want)
			}
			if got := gunzip(t, blob.buf.Bytes()); !bytes.Equal(got, raw) {
				t.Errorf("the blob does not decompress to the tar written (%d bytes, want %d)", len(got), len(raw))
			}
		})
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	raw := makeTar(t, entry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg}, body: string(bytes.Repeat([]byte("abc"), 1<<20))})
	var digests []digest.Digest
	for range 2 {
		desc, err := Write(context.Background(), &memBlob{}, bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, desc.Digest)
	}
	if digests[0] != digests[1] {
		t.Errorf("the same tar gave blobs %s and %s", digests[0], digests[1])
	}
}

func TestWriteExistingBlob(t *testing.T) {
	raw := makeTar(t, entry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg}, body: "x"})
	if _, err := Write(context.Background(), &memBlob{exists: true}, bytes.NewReader(raw)); err != nil {
		t.Errorf("Write of a blob the store already holds = %v, want success", err)
	}
}

func TestWriteErrors(t *testing.T) {
	good := makeTar(t, entry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg}, body: string(bytes.Repeat([]byte{7}, 4<<20))})
	for _, tc := range []struct {
		name    string
		stream  []byte
		blob    *memBlob
		invalid bool
	}{
		{name: "not a tar", stream: bytes.Repeat([]byte("garbage!"), 200), blob: &memBlob{}, invalid: true},
		{name: "truncated tar", stream: good[:len(good)/2], blob: &memBlob{}, invalid: true},
		{name: "blob store fails", stream: good, blob: &memBlob{failAfter: 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Write(context.Background(), tc.blob, bytes.NewReader(tc.stream))
			if err == nil {
				t.Fatal("Write succeeded, want an error")
			}
			if got := errdefs.IsInvalidArgument(err); got != tc.invalid {
				t.Errorf("Write error %q: invalid argument = %v, want %v", err, got, tc.invalid)
			}
			if tc.blob.committed || !tc.blob.closed {
				t.Errorf("blob committed=%v closed=%v, want an uncommitted, closed blob", tc.blob.committed, tc.blob.closed)
			}
		})
	}
}

func TestWriteCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	blob := &memBlob{}
	raw := makeTar(t, entry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg}, body: "x"})
	if _, err := Write(ctx, blob, bytes.NewReader(raw)); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a canceled context = %v, want context.Canceled", err)
	}
	if blob.committed {
		t.Error("a canceled Write committed its blob")
	}
}

func TestWriteWithCheck(t *testing.T) {
	raw := makeTar(t,
		entry{hdr: tar.Header{Name: "ok", Typeflag: tar.TypeReg}, body: "x"},
		entry{hdr: tar.Header{Name: "../escape", Typeflag: tar.TypeReg}, body: "y"},
	)
	var seen []string
	refuse := errdefs.InvalidArgument("entry escapes")
	blob := &memBlob{}
	_, err := Write(context.Background(), blob, bytes.NewReader(raw), WithCheck(func(h *tar.Header) error {
		seen = append(seen, h.Name)
		if h.Name == "../escape" {
			return refuse
		}
		return nil
	}))
	if !errors.Is(err, refuse) || blob.committed {
		t.Errorf("Write with a refusing check = %v (committed %v), want the check's error and nothing committed", err, blob.committed)
	}
	if len(seen) != 2 {
		t.Errorf("check saw %v, want both entries", seen)
	}
}

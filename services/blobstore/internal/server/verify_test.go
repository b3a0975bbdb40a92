package server

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
)

// TestVerify: a scrub names the damaged blob among intact ones, in digest
// order; named digests are reported in the order asked, a missing one as
// missing; a scrub goes on after a given digest.
func TestVerify(t *testing.T) {
	t.Run("fs", func(t *testing.T) {
		root := t.TempDir()
		s, err := fsblob.New(root)
		if err != nil {
			t.Fatal(err)
		}
		testVerify(t, s, func(d digest.Digest) string { return filepath.Join(root, "blobs", "sha256", d.Encoded()) })
	})
	t.Run("s3", func(t *testing.T) {
		srv := harness.StartS3(t)
		testVerify(t, newS3(t, srv, "verify"), func(d digest.Digest) string {
			return filepath.Join(srv.Dir, "verify", "blobs", "sha256", d.Encoded())
		})
	})
}

func testVerify(t *testing.T, s blob.Store, path func(digest.Digest) string) {
	ctx := context.Background()
	c := serve(t, s)
	var stored []digest.Digest
	sizes := map[digest.Digest]int64{}
	for i, n := range []int{10, 6<<20 + 1, 1000} {
		b := blobtest.Content(uint64(700+i), n)
		info, err := c.Put(ctx, bytes.NewReader(b), digest.FromBytes(b), int64(n))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, info.Digest)
		sizes[info.Digest] = int64(n)
	}
	damaged := stored[1]
	blobtest.FlipByte(t, path(damaged), 3<<20)
	slices.Sort(stored)

	check := func(d digest.Digest) blobclient.Checked {
		st := blobv1.BlobState_BLOB_STATE_INTACT
		if d == damaged {
			st = blobv1.BlobState_BLOB_STATE_DAMAGED
		}
		return blobclient.Checked{Digest: d, State: st, Size: sizes[d]}
	}
	verify := func(ds []digest.Digest) []blobclient.Checked {
		t.Helper()
		var out []blobclient.Checked
		for r, err := range c.Verify(ctx, ds) {
			if err != nil {
				t.Fatalf("Verify(%v) = %v", ds, err)
			}
			if r.State == blobv1.BlobState_BLOB_STATE_DAMAGED && !strings.Contains(r.Problem, string(damaged)) {
				t.Errorf("Verify: problem %q of %s does not name it", r.Problem, r.Digest)
			}
			r.Problem = ""
			out = append(out, r)
		}
		return out
	}
	var want []blobclient.Checked
	for _, d := range stored {
		want = append(want, check(d))
	}
	if diff := cmp.Diff(want, verify(nil)); diff != "" {
		t.Errorf("Verify of every blob (-want +got):\n%s", diff)
	}

	missing := digest.FromString("never stored")
	named := []digest.Digest{damaged, missing, stored[0]}
	want = []blobclient.Checked{check(damaged), {Digest: missing, State: blobv1.BlobState_BLOB_STATE_MISSING}, check(stored[0])}
	if diff := cmp.Diff(want, verify(named)); diff != "" {
		t.Errorf("Verify(%v) (-want +got):\n%s", named, diff)
	}

	stream, err := blobv1.NewBlobServiceClient(serveConn(t, New(s, nil))).Verify(ctx, &blobv1.VerifyRequest{After: string(stored[0])})
	if err != nil {
		t.Fatal(err)
	}
	var after []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		after = append(after, resp.GetDigest())
	}
	if want := []string{string(stored[1]), string(stored[2])}; !slices.Equal(after, want) {
		t.Errorf("Verify(after %s) = %v, want %v", stored[0], after, want)
	}

	for _, bad := range []string{"sha256:../../x", "md5:" + strings.Repeat("a", 32)} {
		for r, err := range c.Verify(ctx, []digest.Digest{digest.Digest(bad)}) {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Verify(%q) = %+v, %v; want invalid argument", bad, r, err)
			}
		}
	}
	tooMany := make([]digest.Digest, maxVerify+1)
	for i := range tooMany {
		tooMany[i] = digest.FromString(fmt.Sprint(i))
	}
	for _, err := range c.Verify(ctx, tooMany) {
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Verify of %d digests = %v, want invalid argument", len(tooMany), err)
		}
	}
}

// TestReadUnverified: a whole-blob Read fails with DATA_LOSS on a damaged
// blob unless the caller asked for it unverified, for it checks the digest
// itself: it then gets the stored bytes, which are not the blob's.
func TestReadUnverified(t *testing.T) {
	root := t.TempDir()
	s, err := fsblob.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := serve(t, s)
	b := blobtest.Content(710, 3<<20+9)
	d := digest.FromBytes(b)
	if _, err := c.Put(ctx, bytes.NewReader(b), d, int64(len(b))); err != nil {
		t.Fatal(err)
	}
	blobtest.FlipByte(t, filepath.Join(root, "blobs", "sha256", d.Encoded()), 2<<20)
	read := func(opts ...blobclient.ReadOption) ([]byte, error) {
		r, err := c.Open(ctx, d, 0, 0, opts...)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		var got bytes.Buffer
		_, err = r.WriteTo(&got)
		return got.Bytes(), err
	}
	if _, err := read(); !errdefs.IsDataLoss(err) {
		t.Errorf("reading a damaged blob = %v, want data loss", err)
	}
	got, err := read(blobclient.Unverified())
	if err != nil || len(got) != len(b) || digest.FromBytes(got) == d {
		t.Errorf("reading a damaged blob unverified = %d bytes hashing to %s, %v; want its %d stored bytes, which are not %s",
			len(got), digest.FromBytes(got), err, len(b), d)
	}
}

// TestWriteToGathersFrames: gRPC hands a message over in 16 KiB frames,
// and Reader.WriteTo writes each message of the stream to its writer in
// one call, not one per frame (a system call each when the writer is the
// registry's connection), with the blob's bytes in order.
func TestWriteToGathersFrames(t *testing.T) {
	s, err := fsblob.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := serve(t, s)
	b := blobtest.Content(711, 3*DefaultChunkSize+9)
	d := digest.FromBytes(b)
	if _, err := c.Put(ctx, bytes.NewReader(b), d, int64(len(b))); err != nil {
		t.Fatal(err)
	}
	r, err := c.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var w countingWriter
	if n, err := r.WriteTo(&w); err != nil || n != int64(len(b)) {
		t.Fatalf("WriteTo = %d, %v; want %d bytes", n, err, len(b))
	}
	if !bytes.Equal(w.Bytes(), b) {
		t.Errorf("WriteTo wrote %d bytes hashing to %s, want the blob's %d", w.Len(), digest.FromBytes(w.Bytes()), len(b))
	}
	if w.writes > 4 {
		t.Errorf("WriteTo of a blob of 4 messages made %d writes, want at most 4", w.writes)
	}
}

// countingWriter is a bytes.Buffer that counts the calls to Write.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

package server

import (
	"bytes"
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
)

// A writer that leaves the digest to CommitDigest stores the blob when the
// digest is right, and the server still refuses a wrong one.
func TestWriterDigestAtCommit(t *testing.T) {
	ctx := context.Background()
	c := serve(t, newFS(t))
	data := bytes.Repeat([]byte("layer bytes "), 100_000)
	d := digest.FromBytes(data)

	w, err := c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithDigestAtCommit())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	info, err := w.CommitDigest(ctx, d)
	if err != nil {
		t.Fatalf("CommitDigest = %v", err)
	}
	if info.Digest != d || info.Size != int64(len(data)) {
		t.Fatalf("stored %v, want %s of %d bytes", info, d, len(data))
	}
	w.Close()

	w, err = c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithDigestAtCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data[1:]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.CommitDigest(ctx, d); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("CommitDigest of other bytes = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := c.Stat(ctx, digest.FromBytes(data[1:])); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat of the refused blob = %v, want NOT_FOUND", err)
	}

	w, err = c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithDigestAtCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Commit without a digest = %v, want INVALID_ARGUMENT", err)
	}
}

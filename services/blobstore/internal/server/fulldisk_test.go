package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
)

// TestFullDisk runs the fs backend on a filesystem of 16 MiB (tmpfs and a
// loop-mounted ext4), in the store and through gRPC: an upload that fills
// it fails RESOURCE_EXHAUSTED naming the store, the committed blob stays
// readable, nothing of the failed upload is visible, and the upload resumes
// from the bytes it kept once space is freed.
func TestFullDisk(t *testing.T) {
	for _, fstype := range []string{"tmpfs", "ext4"} {
		for _, overGRPC := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/grpc=%v", fstype, overGRPC), func(t *testing.T) {
				mnt := harness.SmallFS(t, fstype, 16<<20)
				root := filepath.Join(mnt, "blobs")
				fs, err := fsblob.New(root)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { fs.Close() })
				var s blob.Store = fs
				if overGRPC {
					s = clientStore(t, fs)
				}
				testFullDisk(t, s, mnt, root)
			})
		}
	}
}

func testFullDisk(t *testing.T, s blob.Store, mnt, root string) {
	ctx := t.Context()
	kept := blobtest.Content(1, 2<<20)
	committed, err := blob.Check(ctx, s, put(t, s, kept))
	if err != nil {
		t.Fatal(err)
	}

	// Leave about 1 MiB free for an upload of 4 MiB.
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-1<<20); err != nil {
		t.Fatal(err)
	}

	b := blobtest.Content(2, 4<<20)
	d := digest.FromBytes(b)
	opts := blob.WriterOptions{Ref: "fills-the-disk", Expected: d, Size: int64(len(b))}
	w, err := s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("NewWriter = %v", err)
	}
	for off := 0; off < len(b) && err == nil; off += 256 << 10 {
		_, err = w.Write(b[off : off+256<<10])
	}
	if err == nil {
		_, err = w.Commit(ctx, "")
	}
	w.Close()
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), root) {
		t.Fatalf("uploading 4 MiB into 1 MiB of space = %v; want RESOURCE_EXHAUSTED naming %s", err, root)
	}

	if info, err := blob.Check(ctx, s, committed.Digest); err != nil || info.Size != int64(len(kept)) {
		t.Errorf("Check(%s) of the committed blob on a full disk = %+v, %v", committed.Digest, info, err)
	}
	if _, err := s.Stat(ctx, d); !errdefs.IsNotFound(err) {
		t.Errorf("Stat(%s) of the failed upload = %v, want not found", d, err)
	}
	if list, err := s.List(ctx, "", 10); err != nil || len(list) != 1 || list[0].Digest != committed.Digest {
		t.Errorf("List on a full disk = %+v, %v; want only %s", list, err, committed.Digest)
	}
	u, err := s.Upload(ctx, opts.Ref)
	if err != nil || u.Offset >= int64(len(b)) {
		t.Fatalf("Upload(%q) after the disk filled = %+v, %v; want it kept short of %d bytes", opts.Ref, u, err, len(b))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	w, err = s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("resuming once space is freed = %v", err)
	}
	defer w.Close()
	if w.Offset() != u.Offset {
		t.Errorf("resumed at %d, want the %d bytes kept", w.Offset(), u.Offset)
	}
	if _, err := w.Write(b[w.Offset():]); err != nil {
		t.Fatalf("Write after resuming = %v", err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit after resuming = %v", err)
	}
	if _, err := blob.Check(ctx, s, d); err != nil {
		t.Errorf("Check(%s) of the resumed upload = %v", d, err)
	}
}

// put stores b and returns its digest.
func put(t *testing.T, s blob.Store, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	w, err := s.NewWriter(t.Context(), blob.WriterOptions{Ref: "put-" + d.Encoded()[:12], Expected: d, Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := io.Copy(w, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	return d
}

// fill writes path until its filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 256<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			return
		}
	}
}

package archive

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// FuzzLoad loads any bytes as a `docker load` archive, under small limits.
// A load either records images whose config and layers are all in the blob
// store, or fails having recorded none, with an error that says the
// archive is at fault (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, or NOT_FOUND
// for an index without a linux/amd64 image), never an internal one.
func FuzzLoad(f *testing.F) {
	ctx := context.Background()
	src := newFixture(f)
	importTwo(f, src)
	for _, format := range []SaveFormat{FormatDocker, FormatOCI} {
		var archive bytes.Buffer
		if err := src.svc.Save(ctx, []string{"busybox", "hello:2"}, format, &archive); err != nil {
			f.Fatal(err)
		}
		f.Add(archive.Bytes())
	}
	legacy, _, _ := legacyArchive(f)
	f.Add(legacy)
	f.Fuzz(func(t *testing.T, archive []byte) {
		dst := newLimitedFixture(t, transfer.Limits{
			Limits:                  compression.Limits{MaxSize: 1 << 20},
			MaxArchiveSize:          4 << 20,
			MaxArchiveDocuments:     64,
			MaxArchiveDocumentBytes: 256 << 10,
		})
		loaded, err := dst.svc.Load(ctx, bytes.NewReader(archive), nil)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errors.Is(err, errdefs.ErrResourceExhausted) && !errdefs.IsNotFound(err) {
				t.Fatalf("Load = %v (%T), want INVALID_ARGUMENT, RESOURCE_EXHAUSTED or NOT_FOUND", err, err)
			}
			if n := dst.images.Count(); n != 0 {
				t.Fatalf("a refused load (%v) recorded %d images", err, n)
			}
			return
		}
		for _, li := range loaded {
			img, err := dst.svc.images.Get(ctx, li.ImageID.String())
			if err != nil {
				t.Fatalf("loaded image %s: %v", li.ImageID, err)
			}
			blobs := []digest.Digest{li.ImageID, img.ManifestDescriptor().Digest}
			for _, l := range img.Layers() {
				blobs = append(blobs, l.Blob.Digest)
			}
			if missing, _ := dst.blobs.Missing(ctx, blobs); len(missing) > 0 {
				t.Fatalf("loaded image %s lacks the blobs %v", li.ImageID, missing)
			}
		}
	})
}

package build

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/types/known/durationpb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/lib/lease"
	"github.com/strata-build/strata/services/builder/internal/image"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// A build's lease outlives its expiry while the build runs (it is renewed)
// and holds its blobs through collections with no grace period; released,
// it holds nothing.
func TestBuildLeaseIsRenewedUntilReleased(t *testing.T) {
	ctx := context.Background()
	s := harness.StartStack(t, harness.StackOptions{NoBuilder: true})
	images, blobs := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)), blobclient.New(s.Dial(t, s.BlobstoreAddr))
	collect := func() *metadatav1.CollectGarbageResponse {
		t.Helper()
		res, err := images.CollectGarbage(ctx, &metadatav1.CollectGarbageRequest{GracePeriod: durationpb.New(0)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	const expiry = 3 * time.Second
	l, err := MetadataLeases{Images: images, Blobs: blobs, Expiry: expiry}.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := blobs.Put(ctx, bytes.NewReader([]byte("a layer of a long build")), "", blobclient.SizeUnknown)
	if err != nil {
		t.Fatal(err)
	}
	if missing, err := l.Hold(ctx, info.Digest); err != nil || len(missing) != 0 {
		t.Fatalf("Hold(%s) = %v, %v; want nothing missing", info.Digest, missing, err)
	}
	// The lease's own lifetime, not a wait for a server: past it, only the
	// renewals hold the blob.
	time.Sleep(expiry + expiry/2)
	if res := collect(); slices.Contains(res.GetDeleted(), info.Digest.String()) || res.GetLeased() != 1 {
		t.Fatalf("CollectGarbage past the first lease's expiry = %v; want %s kept for the lease", res, info.Digest)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if res := collect(); !slices.Contains(res.GetDeleted(), info.Digest.String()) || res.GetLeased() != 0 {
		t.Errorf("CollectGarbage after Release = %v; want %s deleted and nothing leased", res, info.Digest)
	}
}

// countingBlobs counts the digests a lease asks the blob store about.
type countingBlobs struct {
	lease.Blobs
	asked []digest.Digest
}

func (c *countingBlobs) Exists(ctx context.Context, ds []digest.Digest) (map[digest.Digest]blobclient.Info, error) {
	c.asked = append(c.asked, ds...)
	return c.Blobs.Exists(ctx, ds)
}

// A lease asks the blob store about a blob until it has seen it stored:
// held, it stays (a warm build's cached steps share their layers, and each
// used to cost a blob store call for all of them). A blob it did not find
// is asked about again, and reported missing.
func TestLeaseAsksAboutAHeldBlobOnce(t *testing.T) {
	ctx := context.Background()
	s := harness.StartStack(t, harness.StackOptions{NoBuilder: true})
	images, blobs := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)), blobclient.New(s.Dial(t, s.BlobstoreAddr))
	counted := &countingBlobs{Blobs: blobs}
	l, err := MetadataLeases{Images: images, Blobs: counted}.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	a, err := blobs.Put(ctx, bytes.NewReader([]byte("layer a")), "", blobclient.SizeUnknown)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blobs.Put(ctx, bytes.NewReader([]byte("layer b")), "", blobclient.SizeUnknown)
	if err != nil {
		t.Fatal(err)
	}
	gone := digest.FromString("never stored")
	for i, hold := range [][]digest.Digest{{a.Digest}, {a.Digest, b.Digest, gone}, {a.Digest, b.Digest, gone}} {
		var want []digest.Digest
		if slices.Contains(hold, gone) {
			want = []digest.Digest{gone}
		}
		missing, err := l.Hold(ctx, hold...)
		if err != nil || !slices.Equal(missing, want) {
			t.Fatalf("Hold %d (%v) = %v, %v; want %v missing", i, hold, missing, err, want)
		}
	}
	if want := []digest.Digest{a.Digest, b.Digest, gone, gone}; !slices.Equal(counted.asked, want) {
		t.Errorf("the blob store was asked about %v, want %v", counted.asked, want)
	}
}

// A lease asks the blob store nothing about the blobs of a recorded image
// (a warm build's base image and cache hits): the metadata service names
// them as referenced when they are held, and an image's blobs are stored
// while it is. Blobs no image references are still asked about.
func TestLeaseTrustsTheBlobsOfRecordedImages(t *testing.T) {
	ctx := context.Background()
	s := harness.StartStack(t, harness.StackOptions{NoBuilder: true})
	images, blobs := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)), blobclient.New(s.Dial(t, s.BlobstoreAddr))
	layerBlob := []byte("a layer blob")
	diffID := digest.FromString("a layer's tar")
	cfg := &image.Config{Architecture: "amd64", OS: "linux", Created: time.Unix(1, 0).UTC(), RootFS: image.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}}}
	rec, recBlobs, err := image.Assemble(image.New{Config: cfg, Layers: []image.Layer{{
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layerBlob), Size: int64(len(layerBlob))}, DiffID: diffID,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range append(recBlobs, image.Blob{Descriptor: ocispec.Descriptor{Digest: digest.FromBytes(layerBlob)}, Data: layerBlob}) {
		if _, err := blobs.Put(ctx, bytes.NewReader(b.Data), b.Descriptor.Digest, int64(len(b.Data))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := images.PutImage(ctx, &metadatav1.PutImageRequest{Image: rec}); err != nil {
		t.Fatal(err)
	}
	loose, err := blobs.Put(ctx, bytes.NewReader([]byte("no image's blob")), "", blobclient.SizeUnknown)
	if err != nil {
		t.Fatal(err)
	}

	counted := &countingBlobs{Blobs: blobs}
	l, err := MetadataLeases{Images: images, Blobs: counted}.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	held := []digest.Digest{digest.Digest(rec.GetManifest().GetDigest()), digest.Digest(rec.GetId()), digest.FromBytes(layerBlob)}
	if missing, err := l.Hold(ctx, held...); err != nil || len(missing) != 0 {
		t.Fatalf("Hold of an image's blobs = %v, %v; want none missing", missing, err)
	}
	if len(counted.asked) != 0 {
		t.Errorf("Hold of an image's blobs asked the blob store about %v, want nothing", counted.asked)
	}
	if missing, err := l.Hold(ctx, append(held, loose.Digest)...); err != nil || len(missing) != 0 {
		t.Fatalf("Hold of an image's blobs and another = %v, %v; want none missing", missing, err)
	}
	if want := []digest.Digest{loose.Digest}; !slices.Equal(counted.asked, want) {
		t.Errorf("the blob store was asked about %v, want %v", counted.asked, want)
	}
}

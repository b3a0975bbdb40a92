package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/durationpb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
)

// clients dials the stack's metadata service and blob store.
func (s *stack) clients(t *testing.T) (metadatav1.ImageServiceClient, *blobclient.Client) {
	t.Helper()
	return metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)), blobclient.New(s.Dial(t, s.BlobstoreAddr))
}

// checkBlobs fails the test unless every blob of the image and of its
// parents (manifest, config, layers) is stored.
func checkBlobs(t *testing.T, images metadatav1.ImageServiceClient, blobs *blobclient.Client, ref string) {
	t.Helper()
	ctx := context.Background()
	for ref != "" {
		res, err := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: ref})
		if err != nil {
			t.Fatalf("GetImage(%s) = %v", ref, err)
		}
		img := res.GetImage()
		ds := []digest.Digest{digest.Digest(img.GetManifest().GetDigest()), digest.Digest(img.GetId())}
		for _, l := range img.GetLayers() {
			ds = append(ds, digest.Digest(l.GetDigest()))
		}
		have, err := blobs.Exists(ctx, ds)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if _, ok := have[d]; !ok {
				t.Errorf("image %s: blob %s is not stored", img.GetId(), d)
			}
		}
		ref = img.GetParent()
	}
}

// Garbage collection with no grace period, run again and again by two
// callers while a build stores its layers and records its images, deletes
// nothing the build needs: the build's lease holds its blobs until its
// images are recorded.
func TestCollectionDuringABuildLosesNothing(t *testing.T) {
	s := withBusybox(t)
	images, blobs := s.clients(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Dockerfile": "FROM busybox\nARG N\nCOPY a /a\nRUN echo $N > /n && head -c 300000 /dev/urandom > /r1\nCOPY b /b\nRUN head -c 300000 /dev/urandom > /r2\nRUN cat /a /b > /c\nLABEL done=yes\n",
		"a":          strings.Repeat("a", 100000),
		"b":          strings.Repeat("b", 100000),
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	collections, deleted := 0, 0
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				res, err := images.CollectGarbage(ctx, &metadatav1.CollectGarbageRequest{GracePeriod: durationpb.New(0)})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("CollectGarbage(grace 0) = %v", err)
					}
					return
				}
				mu.Lock()
				collections++
				deleted += len(res.GetDeleted())
				mu.Unlock()
			}
		}()
	}
	// Ten builds at once, each its own (the build argument reaches a RUN),
	// so every one writes layers of its own while the collections run.
	t0 := time.Now()
	const builds = 10
	results := make([]result, builds)
	var bw sync.WaitGroup
	for i := range builds {
		bw.Go(func() {
			results[i] = s.strata(t, dir, "build", "-q", "--build-arg", fmt.Sprintf("N=%d", i), "-t", fmt.Sprintf("leased:%d", i), ".")
		})
	}
	bw.Wait()
	cancel()
	wg.Wait()
	t.Logf("%d builds took %v; %d collections ran during them, deleting %d blobs", builds, time.Since(t0), collections, deleted)
	if collections < 2 {
		t.Fatalf("only %d collections ran during the builds; the test proves nothing", collections)
	}
	var ids []string
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("build %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	for _, id := range ids {
		checkBlobs(t, images, blobs, id)
	}
	// And once the build is over its lease is gone: nothing stays leased.
	res, err := images.CollectGarbage(context.Background(), &metadatav1.CollectGarbageRequest{GracePeriod: durationpb.New(0)})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetLeased() != 0 {
		t.Errorf("CollectGarbage after the builds kept %d blobs for leases, want 0 (the builds' leases released)", res.GetLeased())
	}
	for _, id := range ids {
		checkBlobs(t, images, blobs, id)
	}
}

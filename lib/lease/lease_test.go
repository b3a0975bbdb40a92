package lease_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/durationpb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/lib/lease"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// stack runs the blob store and the metadata service and returns clients
// of both.
func stack(t *testing.T) (metadatav1.ImageServiceClient, *blobclient.Client) {
	t.Helper()
	s := harness.StartStack(t, harness.StackOptions{NoBuilder: true})
	return metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)), blobclient.New(s.Dial(t, s.BlobstoreAddr))
}

func put(t *testing.T, blobs *blobclient.Client, data []byte) digest.Digest {
	t.Helper()
	info, err := blobs.Put(context.Background(), bytes.NewReader(data), "", blobclient.SizeUnknown)
	if err != nil {
		t.Fatal(err)
	}
	return info.Digest
}

func collect(t *testing.T, images metadatav1.ImageServiceClient) *metadatav1.CollectGarbageResponse {
	t.Helper()
	res, err := images.CollectGarbage(context.Background(), &metadatav1.CollectGarbageRequest{GracePeriod: durationpb.New(0)})
	if err != nil {
		t.Fatalf("CollectGarbage(grace 0) = %v", err)
	}
	return res
}

// TestLeaseKeepsBlobs: a collection with no grace period keeps what a
// lease holds, and collects it once the lease is released or expired.
func TestLeaseKeepsBlobs(t *testing.T) {
	ctx := context.Background()
	images, blobs := stack(t)
	l, err := lease.Create(ctx, images, "build-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	held := put(t, blobs, []byte("a layer of build a"))
	if missing, err := l.Hold(ctx, blobs, held); err != nil || len(missing) != 0 {
		t.Fatalf("Hold(%s) = %v, %v; want nothing missing", held, missing, err)
	}
	loose := put(t, blobs, []byte("a blob nothing holds"))
	res := collect(t, images)
	if !slices.Equal(res.GetDeleted(), []string{loose.String()}) || res.GetLeased() != 1 {
		t.Errorf("CollectGarbage = %v; want %s deleted and 1 leased", res, loose)
	}
	if _, err := blobs.Stat(ctx, held); err != nil {
		t.Fatalf("leased blob %s after a collection: %v", held, err)
	}
	// Hold reports a blob that is not (any more) stored.
	if missing, err := l.Hold(ctx, blobs, loose); err != nil || !slices.Equal(missing, []digest.Digest{loose}) {
		t.Errorf("Hold(%s) of a collected blob = %v, %v; want it missing", loose, missing, err)
	}
	for range 2 {
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release = %v", err)
		}
	}
	if res := collect(t, images); !slices.Contains(res.GetDeleted(), held.String()) {
		t.Errorf("CollectGarbage after Release = %v; want %s deleted", res, held)
	}

	short, err := lease.Create(ctx, images, "", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := put(t, blobs, []byte("held a second"))
	if _, err := short.Hold(ctx, blobs, d); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(short.Expires)) // the lease's own lifetime, not a wait for a server
	if res := collect(t, images); !slices.Contains(res.GetDeleted(), d.String()) {
		t.Errorf("CollectGarbage after the lease expired = %v; want %s deleted", res, d)
	}
	if _, err := short.Add(ctx, d); !errdefs.IsNotFound(err) {
		t.Errorf("Add to an expired lease = %v, want NOT_FOUND", err)
	}
}

// TestCollectionDuringUploads: collections with no grace period run
// back to back while 10 uploaders each store blobs under a lease by the
// protocol (store, Hold, store again what is missing): every blob is there
// at the end.
func TestCollectionDuringUploads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	images, blobs := stack(t)
	stop := make(chan struct{})
	collections := 0
	var gcDone sync.WaitGroup
	gcDone.Add(1)
	go func() {
		defer gcDone.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := images.CollectGarbage(ctx, &metadatav1.CollectGarbageRequest{GracePeriod: durationpb.New(0)}); err != nil {
				t.Errorf("CollectGarbage = %v", err)
				return
			}
			collections++
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stored []digest.Digest
	for u := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := lease.Create(ctx, images, fmt.Sprintf("uploader-%d", u), time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			for range 10 {
				data := make([]byte, 4096)
				_, _ = rand.Read(data)
				info, err := blobs.Put(ctx, bytes.NewReader(data), "", blobclient.SizeUnknown)
				if err != nil {
					t.Error(err)
					return
				}
				missing, err := l.Hold(ctx, blobs, info.Digest)
				if err != nil {
					t.Error(err)
					return
				}
				if len(missing) > 0 {
					if _, err := blobs.Put(ctx, bytes.NewReader(data), info.Digest, int64(len(data))); err != nil {
						t.Error(err)
						return
					}
				}
				mu.Lock()
				stored = append(stored, info.Digest)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	gcDone.Wait()
	have, err := blobs.Exists(ctx, stored)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range stored {
		if _, ok := have[d]; !ok {
			t.Errorf("blob %s stored under a lease is gone", d)
		}
	}
	t.Logf("%d blobs stored by 10 uploaders during %d collections with no grace period", len(stored), collections)
	if collections < 2 {
		t.Errorf("only %d collections ran during the uploads", collections)
	}
}

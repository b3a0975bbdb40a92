package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpcclient.Dial(addr, grpcclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type blobstore struct {
	addr, root string
	client     *blobclient.Client
}

func startBlobstore(t testing.TB) *blobstore {
	t.Helper()
	b := &blobstore{addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), root: t.TempDir()}
	harness.Start(t, []string{"STRATA_LISTEN=" + b.addr, "STRATA_FS_ROOT=" + b.root}, harness.Binary(t, "strata-blobstore"))
	harness.WaitServing(t, b.addr)
	conn := dial(t, b.addr)
	b.client = blobclient.New(conn)
	return b
}

// upload stores the blobs of a fixture image, except the skipped digests.
func (b *blobstore) upload(t testing.TB, img *metadatav1.Image, skip ...string) {
	t.Helper()
	for d, data := range imagetest.Contents(img) {
		if contains(skip, d) {
			continue
		}
		if _, err := b.client.Put(context.Background(), bytes.NewReader(data), digest.Digest(d), int64(len(data))); err != nil {
			t.Fatalf("uploading %s: %v", d, err)
		}
	}
}

// age makes a blob look as old as the given age to garbage collection (the
// fs backend dates a blob by its file's modification time).
func (b *blobstore) age(t *testing.T, d string, age time.Duration) {
	t.Helper()
	p := filepath.Join(b.root, "blobs", "sha256", digest.Digest(d).Encoded())
	old := time.Now().Add(-age)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// startMetadata runs strata-metadata with the given environment and returns
// its process and a client.
func startMetadata(t *testing.T, env ...string) (*harness.Process, metadatav1.ImageServiceClient) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	p := harness.Start(t, append([]string{"STRATA_LISTEN=" + addr, "STRATA_GC_INTERVAL=0"}, env...), harness.Binary(t, "strata-metadata"))
	harness.WaitServing(t, addr)
	conn := dial(t, addr)
	return p, metadatav1.NewImageServiceClient(conn)
}

// TestBlobsGCAndRestart runs the real service over SQLite beside the real
// blob store: recording an image needs its blobs; garbage collection keeps
// referenced and young blobs and deletes old unreferenced ones; the data
// survives a restart.
func TestBlobsGCAndRestart(t *testing.T) {
	ctx := context.Background()
	blobs := startBlobstore(t)
	dbPath := filepath.Join(t.TempDir(), "metadata.db")
	env := []string{"STRATA_SQLITE_PATH=" + dbPath, "STRATA_BLOBSTORE_ADDR=" + blobs.addr}
	proc, images := startMetadata(t, env...)

	img := imagetest.Make(t, imagetest.Step{Comment: "Imported from -", LayerSize: 1000})
	layer := img.GetLayers()[0].GetDigest()
	req := &metadatav1.PutImageRequest{Image: img, Tags: []string{"busybox"}, Action: metadatav1.EventAction_EVENT_ACTION_IMPORT}
	_, err := images.PutImage(ctx, req)
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("PutImage without blobs = %v, want FAILED_PRECONDITION", err)
	}
	for _, d := range imagetest.Blobs(img) {
		if !strings.Contains(err.Error(), d) {
			t.Errorf("PutImage error %q does not list missing blob %s", err, d)
		}
	}
	blobs.upload(t, img, layer)
	_, err = images.PutImage(ctx, req)
	if !errdefs.IsFailedPrecondition(err) || !strings.HasSuffix(err.Error(), "does not hold "+layer) {
		t.Fatalf("PutImage without its layer = %v, want FAILED_PRECONDITION naming only %s", err, layer)
	}
	blobs.upload(t, img)
	if _, err := images.PutImage(ctx, req); err != nil {
		t.Fatalf("PutImage with its blobs = %v", err)
	}

	// Garbage: an old unreferenced blob goes, a young one stays, and so do
	// the image's blobs, however old.
	put := func(s string) string {
		info, err := blobs.client.Put(ctx, strings.NewReader(s), "", blobclient.SizeUnknown)
		if err != nil {
			t.Fatal(err)
		}
		return info.Digest.String()
	}
	oldGarbage, youngGarbage := put("old garbage"), put("young garbage")
	blobs.age(t, oldGarbage, 2*time.Hour)
	for _, d := range imagetest.Blobs(img) {
		blobs.age(t, d, 2*time.Hour)
	}
	gcReq := &metadatav1.CollectGarbageRequest{GracePeriod: durationpb.New(time.Hour)}
	dry, err := images.CollectGarbage(ctx, &metadatav1.CollectGarbageRequest{GracePeriod: gcReq.GracePeriod, DryRun: true})
	if err != nil || len(dry.GetDeleted()) != 1 || dry.GetDeleted()[0] != oldGarbage {
		t.Fatalf("CollectGarbage(dry run) = %v, %v; want [%s]", dry, err, oldGarbage)
	}
	if _, err := blobs.client.Stat(ctx, digest.Digest(oldGarbage)); err != nil {
		t.Fatalf("a dry run deleted %s: %v", oldGarbage, err)
	}
	res, err := images.CollectGarbage(ctx, gcReq)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetDeleted()) != 1 || res.GetDeleted()[0] != oldGarbage || res.GetBytesReclaimed() != int64(len("old garbage")) ||
		res.GetReferenced() != 3 || res.GetWithinGrace() != 1 {
		t.Errorf("CollectGarbage = %v; want %s deleted, 3 referenced, 1 within grace", res, oldGarbage)
	}
	if _, err := blobs.client.Stat(ctx, digest.Digest(oldGarbage)); !errdefs.IsNotFound(err) {
		t.Errorf("old unreferenced blob after GC: Stat = %v, want NOT_FOUND", err)
	}
	for _, d := range append(imagetest.Blobs(img), youngGarbage) {
		if _, err := blobs.client.Stat(ctx, digest.Digest(d)); err != nil {
			t.Errorf("blob %s after GC: %v", d, err)
		}
	}
	// Once the image is deleted its old blobs are garbage too.
	if _, err := images.DeleteImage(ctx, &metadatav1.DeleteImageRequest{Reference: "busybox"}); err != nil {
		t.Fatal(err)
	}
	res, err = images.CollectGarbage(ctx, gcReq)
	if err != nil || len(res.GetDeleted()) != 3 {
		t.Errorf("CollectGarbage after deleting the image = %v, %v; want its 3 blobs", res, err)
	}

	// Data survives a restart.
	img2 := imagetest.Make(t, imagetest.Step{LayerSize: 2000})
	blobs.upload(t, img2)
	if _, err := images.PutImage(ctx, &metadatav1.PutImageRequest{Image: img2, Tags: []string{"app:1", "team/app:2"}}); err != nil {
		t.Fatal(err)
	}
	proc.Stop()
	_, images = startMetadata(t, env...)
	got, err := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: "team/app:2"})
	if err != nil || got.GetImage().GetId() != img2.GetId() || len(got.GetImage().GetRepoTags()) != 2 {
		t.Fatalf("GetImage after restart = %v, %v", got, err)
	}
	hist, err := images.ImageHistory(ctx, &metadatav1.ImageHistoryRequest{Reference: "app:1"})
	if err != nil || len(hist.GetRows()) != 1 || hist.GetRows()[0].GetSize() != 2000 {
		t.Errorf("ImageHistory after restart = %v, %v", hist, err)
	}
}

// TestTwoReplicasOnPostgres runs two metadata services on one PostgreSQL:
// what one records the other serves, events of one reach watchers of the
// other, and parallel moves of one tag through both end with one winner.
func TestTwoReplicasOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := harness.StartPostgres(t)
	blobs := startBlobstore(t)
	env := []string{"STRATA_STORE=postgres", "STRATA_POSTGRES_DSN=" + pg.DSN, "STRATA_BLOBSTORE_ADDR=" + blobs.addr}
	_, a := startMetadata(t, env...)
	_, b := startMetadata(t, env...)

	// b watches; a records.
	watch, err := b.WatchEvents(ctx, &metadatav1.WatchEventsRequest{Filters: []*metadatav1.Filter{{Key: "event", Value: "tag"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Header(); err != nil {
		t.Fatal(err)
	}
	var imgs []*metadatav1.Image
	for i := 0; i < 6; i++ {
		img := imagetest.Make(t, imagetest.Step{LayerSize: int64(i + 1)})
		blobs.upload(t, img)
		imgs = append(imgs, img)
	}
	if _, err := a.PutImage(ctx, &metadatav1.PutImageRequest{Image: imgs[0], Tags: []string{"shared:1"}}); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetImage(ctx, &metadatav1.GetImageRequest{Reference: "shared:1"})
	if err != nil || got.GetImage().GetId() != imgs[0].GetId() {
		t.Fatalf("replica b: GetImage(shared:1) = %v, %v", got, err)
	}
	ev, err := watch.Recv()
	if err != nil || ev.GetEvent().GetReference() != "shared:1" || ev.GetEvent().GetImageId() != imgs[0].GetId() {
		t.Fatalf("replica b's watcher got %v, %v; want the tag event recorded through a", ev, err)
	}

	for _, img := range imgs[1:] {
		if _, err := b.PutImage(ctx, &metadatav1.PutImageRequest{Image: img}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(imgs))
	for i, img := range imgs {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.TagImage(ctx, &metadatav1.TagImageRequest{Source: img.GetId(), Target: "contested"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("parallel TagImage across replicas = %v", err)
		}
	}
	winner, err := a.GetImage(ctx, &metadatav1.GetImageRequest{Reference: "contested"})
	if err != nil {
		t.Fatal(err)
	}
	holders := 0
	for _, img := range imgs {
		r, err := b.GetImage(ctx, &metadatav1.GetImageRequest{Reference: img.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if contains(r.GetImage().GetRepoTags(), "contested:latest") {
			holders++
			if img.GetId() != winner.GetImage().GetId() {
				t.Errorf("%s holds contested:latest but it resolves to %s", img.GetId(), winner.GetImage().GetId())
			}
		}
	}
	if holders != 1 {
		t.Errorf("%d images hold contested:latest, want 1", holders)
	}
	// One event per move, on the watcher of replica b whichever replica
	// moved the tag, the last one naming the winner.
	moved := map[string]int{}
	last := ""
	for range imgs {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatalf("replica b's watcher: %v", err)
		}
		if ev.GetEvent().GetReference() != "contested:latest" {
			t.Fatalf("replica b's watcher got %v, want the moves of contested:latest", ev.GetEvent())
		}
		moved[ev.GetEvent().GetImageId()]++
		last = ev.GetEvent().GetImageId()
	}
	for _, img := range imgs {
		if moved[img.GetId()] != 1 {
			t.Errorf("%d tag events moved contested:latest to %s, want 1", moved[img.GetId()], img.GetId())
		}
	}
	if last != winner.GetImage().GetId() {
		t.Errorf("the last move of contested:latest went to %s, but the tag names %s", last, winner.GetImage().GetId())
	}
	// No more: a sentinel tag event comes next.
	if _, err := a.TagImage(ctx, &metadatav1.TagImageRequest{Source: imgs[0].GetId(), Target: "sentinel"}); err != nil {
		t.Fatal(err)
	}
	if ev, err := watch.Recv(); err != nil || ev.GetEvent().GetReference() != "sentinel:latest" {
		t.Errorf("after the moves replica b's watcher got %v, %v; want the sentinel's tag event", ev, err)
	}
}

package server

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
	"github.com/strata-build/strata/services/blobstore/internal/s3blob"
)

// countedS3 is a store in bucket of srv reached through a proxy that
// counts the requests it passes to S3, with the bucket made already.
func countedS3(t testing.TB, srv *harness.S3, bucket string) (*s3blob.Store, *atomic.Int64) {
	t.Helper()
	target, err := url.Parse("http://" + srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	s, err := s3blob.New(s3blob.Config{
		Endpoint: strings.TrimPrefix(front.URL, "http://"), Bucket: bucket, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(context.Background()); err != nil {
		t.Fatalf("Check = %v", err)
	}
	return s, &n
}

// TestOneShotWrite: a small blob whose first Write message carries all of
// it with the commit costs S3 two requests (the existence check and the
// object), is answered as any commit is, and leaves no upload, nor touches
// an older one under its ref; once stored, it costs one (its bytes are
// checked, not stored again). One whose bytes do not match its digest is
// refused naming both digests, and nothing is stored.
func TestOneShotWrite(t *testing.T) {
	srv := harness.StartS3(t)
	store, requests := countedS3(t, srv, "oneshot")
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	conn := serveConn(t, New(store, m))
	api, c := blobv1.NewBlobServiceClient(conn), blobclient.New(conn)
	ctx := context.Background()

	// An older upload under the ref, interrupted after some bytes.
	w, err := c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef("config"), blobclient.WithDigestAtCommit())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("older")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Pause(ctx); err != nil {
		t.Fatal(err)
	}

	b := blobtest.Content(1, 2345)
	d := digest.FromBytes(b)
	requests.Store(0)
	bytesBefore, uploadsBefore := testutil.ToFloat64(m.bytesIn), uploadsObserved(t, reg)
	info, err := writeOneShot(ctx, api, "config", d, "application/vnd.oci.image.config.v1+json", b)
	if err != nil || info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("one-shot Write = %+v, %v; want %s, %d bytes", info, err, d, len(b))
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("a one-shot Write took %d S3 requests, want 2 (HEAD, PUT)", n)
	}
	if got := testutil.ToFloat64(m.bytesIn) - bytesBefore; got != float64(len(b)) {
		t.Errorf("bytes received = %v, want %d", got, len(b))
	}
	if got := uploadsObserved(t, reg) - uploadsBefore; got != 1 {
		t.Errorf("upload durations observed: %d, want 1", got)
	}
	r, err := c.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("the blob reads back as %d bytes, %v; want %d", len(got), err, len(b))
	}
	if up, err := c.UploadStatus(ctx, "config"); err != nil || up.Offset != 5 {
		t.Errorf("the older upload under the ref = %+v, %v; want it kept at offset 5", up, err)
	}
	if err := c.AbortUpload(ctx, "config"); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(filepath.Join(srv.Dir, "oneshot", "uploads"), func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			t.Errorf("%s is left under uploads/", path)
		}
		return nil
	})

	// blobclient.Put sends a small blob of known digest that way.
	small := blobtest.Content(6, 3456)
	requests.Store(0)
	put, err := c.Put(ctx, bytes.NewReader(small), digest.FromBytes(small), int64(len(small)))
	if err != nil || put.Digest != digest.FromBytes(small) {
		t.Fatalf("Put = %+v, %v; want %s", put, err, digest.FromBytes(small))
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("blobclient.Put of a small blob took %d S3 requests, want 2 (HEAD, PUT)", n)
	}

	// Written again, the stored blob costs only the existence check; wrong
	// bytes under its digest are refused all the same.
	requests.Store(0)
	info, err = writeOneShot(ctx, api, "again", d, "", b)
	if err != nil || info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("one-shot Write of a stored blob = %+v, %v; want %s, %d bytes", info, err, d, len(b))
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("a one-shot Write of a stored blob took %d S3 requests, want 1 (HEAD)", n)
	}
	forged := blobtest.Content(5, len(b))
	if _, err := writeOneShot(ctx, api, "forged", d, "", forged); !errdefs.IsInvalidArgument(err) ||
		!strings.Contains(err.Error(), string(d)) || !strings.Contains(err.Error(), string(digest.FromBytes(forged))) {
		t.Errorf("one-shot Write of other bytes under a stored digest = %v, want invalid argument naming %s and %s", err, d, digest.FromBytes(forged))
	}

	// A size no upload may declare is refused as on the upload path.
	bad := int64(-5)
	unknown := blobtest.Content(4, 10)
	stream, err := api.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&blobv1.WriteRequest{Ref: "bad-size", Digest: string(digest.FromBytes(unknown)), Size: &bad, Data: unknown, Commit: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errdefs.IsInvalidArgument(err) {
		t.Errorf("one-shot Write declaring size %d = %v, want invalid argument", bad, err)
	}

	other := blobtest.Content(2, 2345)
	wrong := digest.FromBytes(blobtest.Content(3, 2345))
	_, err = writeOneShot(ctx, api, "wrong", wrong, "", other)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), string(wrong)) || !strings.Contains(err.Error(), string(digest.FromBytes(other))) {
		t.Errorf("one-shot Write of the wrong bytes = %v, want invalid argument naming %s and %s", err, wrong, digest.FromBytes(other))
	}
	for _, d := range []digest.Digest{wrong, digest.FromBytes(other)} {
		if _, err := store.Stat(ctx, d); !errdefs.IsNotFound(err) {
			t.Errorf("Stat(%s) after a refused one-shot Write = %v, want not found", d, err)
		}
	}
}

// uploadsObserved is how many upload durations reg holds.
func uploadsObserved(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "strata_blob_upload_duration_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// BenchmarkSmallWrite writes a 2 KiB blob (an image config's size) over
// S3 on versitygw with blobclient.Put, which sends it whole in the first
// message, or as an upload (a first message, then the bytes with the
// commit), and reports the S3 requests of each.
func BenchmarkSmallWrite(b *testing.B) {
	srv := harness.StartS3(b)
	seed := uint64(0) // new blobs in every run, which the same buckets keep
	for _, mode := range []string{"put", "upload"} {
		b.Run(mode, func(b *testing.B) {
			store, requests := countedS3(b, srv, "bench-"+mode)
			conn := serveConn(b, New(store, nil))
			c := blobclient.New(conn)
			ctx := context.Background()
			blobs := make([][]byte, b.N)
			for i := range blobs {
				seed++
				blobs[i] = blobtest.Content(seed, 2048)
			}
			requests.Store(0)
			b.ResetTimer()
			for i := range b.N {
				d := digest.FromBytes(blobs[i])
				var err error
				if mode == "put" {
					_, err = c.Put(ctx, bytes.NewReader(blobs[i]), d, int64(len(blobs[i])))
				} else {
					err = upload(ctx, c, d, blobs[i])
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(requests.Load())/float64(b.N), "s3-requests/op")
		})
	}
}

// upload writes b as the blob d through a writer: its first message, then
// the bytes with the commit.
func upload(ctx context.Context, c *blobclient.Client, d digest.Digest, b []byte) error {
	w, err := c.NewWriter(ctx, d, int64(len(b)))
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(b); err != nil {
		return err
	}
	_, err = w.Commit(ctx)
	return err
}

package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/blobwire"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
)

// TestResumeAfterDroppedStream breaks an upload's stream mid-way, as a
// client crash or a network cut would, and resumes it under the same ref.
func TestResumeAfterDroppedStream(t *testing.T) {
	c := serve(t, newFS(t))
	b := blobtest.Content(1, 9<<20+17)
	d := digest.FromBytes(b)
	ctx, cut := context.WithCancel(context.Background())
	w, err := c.NewWriter(ctx, d, int64(len(b)), blobclient.WithRef("dropped"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:5<<20]); err != nil {
		t.Fatal(err)
	}
	cut()
	if _, err := w.Write(b[5<<20 : 6<<20]); err == nil {
		t.Errorf("Write after the stream was cut = nil, want an error")
	}
	if _, err := c.Stat(context.Background(), d); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat after a cut upload = %v, want not found", err)
	}

	// The resumed writer waits for the server to let go of the ref.
	info, err := c.Put(context.Background(), bytes.NewReader(b), d, int64(len(b)), blobclient.WithRef("dropped"))
	if err != nil {
		t.Fatalf("Put resuming the cut upload = %v", err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Errorf("Put = %+v, want %s, %d bytes", info, d, len(b))
	}
	r, err := c.Open(context.Background(), d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("reading the resumed blob: %d bytes, %v", len(got), err)
	}
}

// TestExistingBlobIsNotSentAgain checks that a writer of a stored digest
// learns so at once and that no byte crosses the wire.
func TestExistingBlobIsNotSentAgain(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	c := serveWith(t, New(newFS(t), m))
	ctx := context.Background()
	b := blobtest.Content(2, 3<<20)
	d := digest.FromBytes(b)
	if _, err := c.Put(ctx, bytes.NewReader(b), d, int64(len(b))); err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(m.bytesIn)
	w, err := c.NewWriter(ctx, d, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Exists() {
		t.Fatalf("Exists() = false for a stored blob")
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	info, err := w.Commit(ctx)
	if err != nil || info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("Commit = %+v, %v; want %s", info, err, d)
	}
	if got := testutil.ToFloat64(m.bytesIn) - before; got != 0 {
		t.Errorf("the server received %v bytes for a stored blob, want 0", got)
	}
}

// TestPutWrongDigest checks the message users see: both digests.
func TestPutWrongDigest(t *testing.T) {
	c := serve(t, newFS(t))
	b := []byte("hello")
	wrong := digest.FromString("other")
	_, err := c.Put(context.Background(), bytes.NewReader(b), wrong, int64(len(b)))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), string(wrong)) || !strings.Contains(err.Error(), string(digest.FromBytes(b))) {
		t.Errorf("Put with a wrong digest = %v, want invalid argument naming %s and %s", err, wrong, digest.FromBytes(b))
	}
	var e *errdefs.Error
	if errors.As(err, &e) && e.Reason() != "DIGEST_MISMATCH" {
		t.Errorf("Put with a wrong digest: reason %q, want DIGEST_MISMATCH", e.Reason())
	}
	n := 0
	for _, err := range c.All(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 0 {
		t.Errorf("after a failed put the store lists %d blobs, want 0", n)
	}
}

// TestExistsBatch checks the batch existence call keeps the order asked.
func TestExistsBatch(t *testing.T) {
	c := serve(t, newFS(t))
	ctx := context.Background()
	var stored, missing []digest.Digest
	for i := range 5 {
		b := blobtest.Content(uint64(10+i), 100)
		info, err := c.Put(ctx, bytes.NewReader(b), "", blobclient.SizeUnknown)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, info.Digest)
		missing = append(missing, digest.FromBytes(blobtest.Content(uint64(20+i), 100)))
	}
	found, err := c.Exists(ctx, append(append([]digest.Digest{}, missing...), stored...))
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(stored) {
		t.Errorf("Exists found %d, want %d", len(found), len(stored))
	}
	for _, d := range stored {
		if found[d].Size != 100 {
			t.Errorf("Exists()[%s] = %+v, want size 100", d, found[d])
		}
	}
	if _, err := c.Exists(ctx, []digest.Digest{"sha256:../../x"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Exists(malformed) = %v, want invalid argument", err)
	}
}

// TestPlainProtoClient uploads and reads a blob with the generated client
// and gRPC's own proto codec, as grpcurl or a client in another language
// would: the server's codec (lib/blobwire) speaks plain protobuf.
func TestPlainProtoClient(t *testing.T) {
	api := blobv1.NewBlobServiceClient(serveConn(t, New(newFS(t), nil)))
	ctx := context.Background()
	b := blobtest.Content(3, 3<<20+5)
	d := digest.FromBytes(b)
	stream, err := api.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(b))
	if err := stream.Send(&blobv1.WriteRequest{Ref: "plain", Digest: string(d), Size: &size, Data: b[:100]}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetOffset() != 0 {
		t.Fatalf("first response %v, %v", resp, err)
	}
	// Messages of odd sizes, the last one with the commit.
	for off := 100; off < len(b); {
		n := min(len(b)-off, 1<<20+777)
		req := &blobv1.WriteRequest{Offset: int64(off), Data: b[off : off+n], Commit: off+n == len(b)}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	resp, err := stream.Recv()
	if err != nil || !resp.GetCommitted() || resp.GetBlob().GetDigest() != string(d) {
		t.Fatalf("commit response %v, %v", resp, err)
	}

	read, err := api.Read(ctx, &blobv1.ReadRequest{Digest: string(d), Offset: 7})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		msg, err := read.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetOffset() != int64(7+len(got)) {
			t.Fatalf("message at offset %d after %d bytes", msg.GetOffset(), len(got))
		}
		got = append(got, msg.GetData()...)
	}
	if !bytes.Equal(got, b[7:]) {
		t.Fatalf("read %d bytes, want %d equal to the blob's from offset 7", len(got), len(b)-7)
	}
}

// TestConcurrentPutsOfOneDigestAllSucceed: clients uploading the same blob
// at once all succeed through the API (the store's ALREADY_EXISTS for the
// losers is not an error to them), and one copy is kept.
func TestConcurrentPutsOfOneDigestAllSucceed(t *testing.T) {
	store := newFS(t)
	c := serve(t, store)
	b := blobtest.Content(4, 6<<20+1)
	d := digest.FromBytes(b)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = c.Put(context.Background(), bytes.NewReader(b), d, int64(len(b)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put %d of the same digest = %v, want success", i, err)
		}
	}
	list, err := store.List(context.Background(), "", 10)
	if err != nil || len(list) != 1 || list[0].Digest != d {
		t.Errorf("store after concurrent puts = %+v, %v; want one blob %s", list, err, d)
	}
}

// downStat is a store whose Stat fails as a backend that is down does.
type downStat struct{ blob.Store }

func (downStat) Stat(context.Context, digest.Digest) (blob.Info, error) {
	return blob.Info{}, errdefs.Unavailable("S3 at 127.0.0.1:1 is down")
}

// TestBackendErrorsCountFailuresOnly: strata_blob_backend_errors_total counts
// what the storage fails at, not answers about the caller's input.
func TestBackendErrorsCountFailuresOnly(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	ctx := context.Background()
	c := serveWith(t, New(newFS(t), m))
	if _, err := c.Stat(ctx, digest.FromString("missing")); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat of a missing blob = %v", err)
	}
	b := blobtest.Content(5, 100)
	if _, err := c.Put(ctx, bytes.NewReader(b), digest.FromString("other"), int64(len(b))); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Put with a wrong digest = %v", err)
	}
	if n := testutil.CollectAndCount(m.backendErrors); n != 0 {
		t.Errorf("after a not-found and a digest mismatch, %d backend error series, want none", n)
	}
	down := serveWith(t, New(downStat{newFS(t)}, m))
	if _, err := down.Stat(ctx, digest.FromString("x")); !errdefs.IsUnavailable(err) {
		t.Fatalf("Stat on a down backend = %v", err)
	}
	if got := testutil.ToFloat64(m.backendErrors.WithLabelValues("stat", "Unavailable")); got != 1 {
		t.Errorf("backend errors {op=stat, code=Unavailable} = %v, want 1", got)
	}
}

// TestPause: a writer that pauses learns the offset the server keeps, and
// a writer opened WithResumeOnly goes on from there; one of an unknown ref
// is refused rather than started (the registry's PATCH and PUT).
func TestPause(t *testing.T) {
	c := serve(t, newFS(t))
	ctx := context.Background()
	_, err := c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef("unknown"), blobclient.WithResumeOnly())
	if !errdefs.IsNotFound(err) {
		t.Errorf("NewWriter(WithResumeOnly) of an unknown ref = %v, want not found", err)
	}
	if _, err := c.UploadStatus(ctx, "unknown"); !errdefs.IsNotFound(err) {
		t.Errorf("UploadStatus after a refused resume = %v, want not found", err)
	}

	b := blobtest.Content(3, 3<<20+5)
	d := digest.FromBytes(b)
	w, err := c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef("paused"), blobclient.WithDigestAtCommit())
	if err != nil {
		t.Fatal(err)
	}
	if off, err := w.Pause(ctx); off != 0 || err != nil {
		t.Fatalf("Pause of a new upload = %d, %v; want 0", off, err)
	}
	for _, end := range []int{1<<20 + 3, 1<<20 + 4, len(b)} {
		w, err := c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef("paused"), blobclient.WithDigestAtCommit(), blobclient.WithResumeOnly())
		if err != nil {
			t.Fatalf("NewWriter(WithResumeOnly) = %v", err)
		}
		start := w.Offset()
		if _, err := w.Write(b[start:end]); err != nil {
			t.Fatal(err)
		}
		if off, err := w.Pause(ctx); off != int64(end) || err != nil {
			t.Fatalf("Pause after bytes %d to %d = %d, %v; want %d", start, end, off, err, end)
		}
	}
	w, err = c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef("paused"), blobclient.WithDigestAtCommit(), blobclient.WithResumeOnly())
	if err != nil {
		t.Fatal(err)
	}
	if info, err := w.CommitDigest(ctx, d); err != nil || info.Size != int64(len(b)) {
		t.Fatalf("CommitDigest = %+v, %v; want %d bytes", info, err, len(b))
	}
	r, err := c.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, b) {
		t.Errorf("reading the blob: %d bytes, %v; want %d", len(got), err, len(b))
	}
}

// TestPauseAgainstAnOlderServer: a blob store older than pause ignores the
// field (an unknown one); the registry's Pause must still learn the offset
// kept, in bounded time, rather than wait on a server waiting for more.
func TestPauseAgainstAnOlderServer(t *testing.T) {
	older := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return pauseUnknown{s}, err
	})
	c := blobclient.New(serveConn(t, New(newFS(t), nil), older))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := c.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef("paused"), blobclient.WithDigestAtCommit())
	if err != nil {
		t.Fatal(err)
	}
	b := blobtest.Content(4, 1<<20+7)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if off, err := w.Pause(ctx); off != int64(len(b)) || err != nil {
		t.Fatalf("Pause = %d, %v; want %d", off, err, len(b))
	}
	if up, err := c.UploadStatus(ctx, "paused"); err != nil || up.Offset != int64(len(b)) {
		t.Errorf("UploadStatus after Pause = %+v, %v; want offset %d", up, err, len(b))
	}
}

// pauseUnknown sends WriteRequests as to a server that does not know
// their pause field: without it.
type pauseUnknown struct{ grpc.ClientStream }

func (s pauseUnknown) SendMsg(m any) error {
	if b, ok := m.(*blobwire.Bulk); ok {
		if req, ok := b.Msg.(*blobv1.WriteRequest); ok {
			req.Pause = false
		}
	}
	return s.ClientStream.SendMsg(m)
}

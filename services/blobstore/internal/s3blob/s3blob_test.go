package s3blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
)

var buckets atomic.Int64

// NewTestStore returns a store in a new bucket of srv, with the smallest
// parts S3 allows so that multipart paths run on small blobs.
func NewTestStore(t *testing.T, srv *harness.S3) *Store {
	t.Helper()
	s, err := New(Config{
		Endpoint: srv.Endpoint, Bucket: fmt.Sprintf("strata-test-%d", buckets.Add(1)), PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true,
		PartSize: MinPartSize, Concurrency: 3, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check = %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := harness.StartS3(t)
	blobtest.TestStore(t, func(t *testing.T) blob.Store { return NewTestStore(t, srv) })
}

func TestDamage(t *testing.T) {
	srv := harness.StartS3(t)
	blobtest.TestDamage(t, func(t *testing.T) (blob.Store, blobtest.Damage) {
		s := NewTestStore(t, srv)
		return s, func(t *testing.T, d digest.Digest, off int64) {
			blobtest.FlipByte(t, filepath.Join(srv.Dir, s.cfg.Bucket, blobKey(d)), off)
		}
	})
}

func TestReplicas(t *testing.T) {
	srv := harness.StartS3(t)
	blobtest.TestReplicas(t, func(t *testing.T) (blob.Store, blob.Store) {
		a := NewTestStore(t, srv)
		b, err := New(a.cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	})
}

// TestConformanceSignedPayload runs the suite with every part's bytes
// signed, which versitygw checks chunk by chunk.
func TestConformanceSignedPayload(t *testing.T) {
	srv := harness.StartS3(t)
	blobtest.TestStore(t, func(t *testing.T) blob.Store {
		s := NewTestStore(t, srv)
		s.cfg.SignPayload = true
		return s
	})
}

// multipartUploads lists the incomplete multipart uploads in the bucket.
func multipartUploads(t *testing.T, s *Store) []minio.ObjectMultipartInfo {
	t.Helper()
	res, err := s.core.ListMultipartUploads(context.Background(), s.cfg.Bucket, "", "", "", "", 1000)
	if err != nil {
		t.Fatalf("ListMultipartUploads = %v", err)
	}
	return res.Uploads
}

// TestDownAtStart: a store made while S3 is down answers UNAVAILABLE,
// naming the endpoint, and works once S3 is back.
func TestDownAtStart(t *testing.T) {
	srv := harness.StartS3(t)
	srv.Stop()
	s, err := New(Config{
		Endpoint: srv.Endpoint, Bucket: "down-at-start", PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true, MaxRetries: 1,
	})
	if err != nil {
		t.Fatalf("New with S3 down = %v, want a store that waits for it", err)
	}
	ctx := context.Background()
	d := digest.FromString("x")
	_, err = s.Stat(ctx, d)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), srv.Endpoint) {
		t.Errorf("Stat with S3 down = %v, want unavailable naming %s", err, srv.Endpoint)
	}
	_, err = s.NewWriter(ctx, blob.WriterOptions{Ref: "r", Expected: d, Size: 1})
	if !errdefs.IsUnavailable(err) {
		t.Errorf("NewWriter with S3 down = %v, want unavailable", err)
	}

	srv.Start(t)
	if _, err := s.Stat(ctx, d); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat once S3 is back = %v, want not found", err)
	}
	w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: "r", Expected: d, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit once S3 is back = %v", err)
	}
}

// TestKilledMidUpload kills S3 during a multipart upload: the upload fails,
// no blob is visible, and after S3 restarts the same upload resumes, in a
// new store as a new process would, once the lease the failed writer could
// not let go of has run out, and commits.
func TestKilledMidUpload(t *testing.T) {
	srv := harness.StartS3(t)
	s := NewTestStore(t, srv)
	s.cfg.LeaseTTL = time.Second
	ctx := context.Background()
	b := blobtest.Content(1, 23<<20+11)
	d := digest.FromBytes(b)
	opts := blob.WriterOptions{Ref: "killed", Expected: d, Size: int64(len(b))}
	w, err := s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:16<<20]); err != nil {
		t.Fatal(err)
	}
	// Three parts are on their way; wait until two are saved.
	harness.WaitFor(t, "saved parts", 30*time.Second, func(ctx context.Context) error {
		u, err := s.Upload(ctx, "killed")
		if err != nil {
			return err
		}
		if u.Offset < 10<<20 {
			return fmt.Errorf("offset %d", u.Offset)
		}
		return nil
	})
	srv.Stop()
	_, err = w.Write(b[16<<20:])
	if err == nil {
		_, err = w.Commit(ctx, "")
	}
	if !errdefs.IsUnavailable(err) {
		t.Errorf("writing with S3 killed = %v, want unavailable", err)
	}
	w.Close()

	srv.Start(t)
	if _, err := s.Stat(ctx, d); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat after the failed upload = %v, want not found", err)
	}
	s2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "the lease to run out", 10*time.Second, func(context.Context) error {
		w, err = s2.NewWriter(ctx, opts) // not the poll's context, which ends when it returns
		return err
	})
	defer w.Close()
	if off := w.Offset(); off < 10<<20 || off%MinPartSize != 0 {
		t.Errorf("resumed at %d, want a part boundary of at least %d", off, 10<<20)
	}
	if _, err := w.Write(b[w.Offset():]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit after resuming = %v", err)
	}
	rc, _, err := s2.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("reading the resumed blob: %d bytes, %v", len(got), err)
	}
	if ups := multipartUploads(t, s2); len(ups) != 0 {
		t.Errorf("multipart uploads left: %+v", ups)
	}
}

// TestJanitorAbortsMultipart: idle uploads and orphaned multipart uploads
// are aborted; recent ones stay.
func TestJanitorAbortsMultipart(t *testing.T) {
	srv := harness.StartS3(t)
	s := NewTestStore(t, srv)
	ctx := context.Background()
	b := blobtest.Content(2, 12<<20)
	w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: "idle", Expected: digest.FromBytes(b), Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:11<<20]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// An orphan: a multipart upload no saved state owns.
	if _, err := s.core.NewMultipartUpload(ctx, s.cfg.Bucket, "blobs/sha256/"+strings.Repeat("0", 64), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	// A staging object left by a crash between completing and copying.
	if _, err := s.core.PutObject(ctx, s.cfg.Bucket, "ingest/crashed", strings.NewReader("x"), 1, "", "", minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := len(multipartUploads(t, s)); got != 2 {
		t.Fatalf("%d multipart uploads before cleaning, want 2", got)
	}
	if n, err := s.CleanUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("CleanUploads(an hour ago) = %d, %v; want 0", n, err)
	}
	if got := len(multipartUploads(t, s)); got != 2 {
		t.Errorf("%d multipart uploads after cleaning nothing, want 2", got)
	}
	if n, err := s.CleanUploads(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Errorf("CleanUploads(in an hour) = %d, %v; want 1", n, err)
	}
	if ups := multipartUploads(t, s); len(ups) != 0 {
		t.Errorf("multipart uploads left after cleaning: %+v", ups)
	}
	if _, err := s.core.StatObject(ctx, s.cfg.Bucket, "ingest/crashed", minio.StatObjectOptions{}); !isNotFound(err) {
		t.Errorf("StatObject(ingest/crashed) after cleaning = %v, want not found", err)
	}
}

// TestDeclaredSizeBoundsMemory: a declared size picks parts large enough for
// S3's 10,000, but never larger than what --s3-max-parts allows in flight,
// and a size past the store's limit is refused before anything is stored.
func TestDeclaredSizeBoundsMemory(t *testing.T) {
	srv := harness.StartS3(t)
	s := NewTestStore(t, srv) // parts of 5 MiB, 12 in flight at most
	most := int64(s.cfg.MaxParts) * MinPartSize
	limit := s.MaxBlobSize()
	if want := maxParts * most; limit != want {
		t.Fatalf("MaxBlobSize = %d, want %d", limit, want)
	}
	for _, size := range []int64{1, 60 << 30, limit} {
		st := s.newState(blob.WriterOptions{Ref: "r", Size: size})
		if st.PartSize < MinPartSize || st.PartSize > most || st.PartSize*maxParts < size {
			t.Errorf("declared size %d: part size %d, want %d to %d bytes and 10,000 parts enough", size, st.PartSize, MinPartSize, most)
		}
	}
	d := digest.FromString("huge")
	for _, size := range []int64{limit + 1, 1 << 62} {
		_, err := s.NewWriter(context.Background(), blob.WriterOptions{Ref: "huge", Expected: d, Size: size})
		if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), fmt.Sprint(size)) {
			t.Errorf("NewWriter of %d bytes = %v, want RESOURCE_EXHAUSTED naming the size", size, err)
		}
	}
	if ups := multipartUploads(t, s); len(ups) != 0 {
		t.Errorf("refused uploads left multipart uploads: %v", ups)
	}
	if _, err := s.Upload(context.Background(), "huge"); !errdefs.IsNotFound(err) {
		t.Errorf("a refused upload is visible: Upload = %v", err)
	}
}

// TestReadRequests checks how many requests a read sends to S3: a small
// blob is one GET (its size comes in Content-Range, no HEAD before it),
// since for the registry's small layers each request is most of a pull.
func TestReadRequests(t *testing.T) {
	s := NewTestStore(t, harness.StartS3(t))
	ctx := context.Background()
	b := blobtest.Content(1, 4096)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, "", b); err != nil {
		t.Fatal(err)
	}
	var trace bytes.Buffer
	s.core.TraceOn(&trace)
	defer s.core.TraceOff()
	for _, tc := range []struct {
		offset, length int64
		want           []byte
		requests       int
	}{
		{0, 0, b, 1},
		{100, 10, b[100:110], 1},
		{4096, 0, nil, 2}, // S3 refuses the empty range: a Stat tells the size
	} {
		trace.Reset()
		rc, info, err := s.Open(ctx, d, tc.offset, tc.length)
		if err != nil {
			t.Fatalf("Open(offset %d, length %d) = %v", tc.offset, tc.length, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, tc.want) || info.Size != int64(len(b)) {
			t.Errorf("Open(offset %d, length %d) read %d bytes, %v, size %d; want %d bytes of %d", tc.offset, tc.length, len(got), err, info.Size, len(tc.want), len(b))
		}
		if n := strings.Count(trace.String(), "---------START-HTTP---------"); n != tc.requests {
			t.Errorf("Open(offset %d, length %d) sent %d requests to S3, want %d:\n%s", tc.offset, tc.length, n, tc.requests, trace.String())
		}
	}
}

// TestLongReadHandsOverBuffers checks that every byte of a blob longer
// than a part, the first part's too (read from the GET Open sends at
// once), comes out of ReadBuffer in the buffers its GETs filled, so that
// the blob store sends them without copying them; one GET per part.
func TestLongReadHandsOverBuffers(t *testing.T) {
	s := NewTestStore(t, harness.StartS3(t))
	ctx := context.Background()
	b := blobtest.Content(2, 2*MinPartSize+3)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, "", b); err != nil {
		t.Fatal(err)
	}
	var trace lockedBuffer // the parts' GETs run in parallel
	s.core.TraceOn(&trace)
	defer s.core.TraceOff()
	rc, _, err := s.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r, _, _, ok := blob.Unverified(rc)
	br, direct := r.(blob.BufferReader)
	if !ok || !direct {
		t.Fatalf("Open of a %d-byte blob gave %T under %T, want a blob.BufferReader under the verifying reader", len(b), r, rc)
	}
	var got []byte
	for {
		buf, err := br.ReadBuffer(1 << 20)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ReadBuffer after %d bytes = %v", len(got), err)
		}
		got = append(got, buf.ReadOnlyData()...)
		buf.Free()
	}
	if !bytes.Equal(got, b) {
		t.Errorf("ReadBuffer gave %d bytes hashing to %s, want the blob's %d", len(got), digest.FromBytes(got), len(b))
	}
	if n := strings.Count(trace.String(), "---------START-HTTP---------"); n != 3 {
		t.Errorf("reading a blob of 3 parts sent %d requests to S3, want 3", n)
	}
}

// lockedBuffer is a bytes.Buffer that several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestChunkedUploadRequests checks what a registry push costs in S3
// requests, step by step (POST: a writer opened and closed; PATCH: one
// resumed, written and closed; PUT: one resumed and committed), and that a
// committed upload leaves nothing under uploads/, whether its last bytes
// were kept in its state (a small layer) or in a tail object.
func TestChunkedUploadRequests(t *testing.T) {
	s := NewTestStore(t, harness.StartS3(t))
	ctx := context.Background()
	var trace bytes.Buffer
	s.core.TraceOn(&trace)
	defer s.core.TraceOff()
	requests := func() int {
		n := strings.Count(trace.String(), "---------START-HTTP---------")
		trace.Reset()
		return n
	}
	for _, size := range []int{4096, maxInlineTail + 1} {
		b := blobtest.Content(uint64(size), size)
		ref := fmt.Sprintf("chunked-%d", size)
		opts := blob.WriterOptions{Ref: ref, Size: -1}
		trace.Reset()
		w, err := s.NewWriter(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close of a new upload = %v", err)
		}
		// Read the state (none), claim it, let go.
		if n := requests(); n != 3 {
			t.Errorf("%d bytes: a new upload took %d requests, want 3", size, n)
		}
		opts.ResumeOnly = true
		if w, err = s.NewWriter(ctx, opts); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close after %d bytes = %v", size, err)
		}
		// Read the state, claim it, let go with the bytes in it; a longer
		// tail is noted in the state, then written as an object.
		want := 3
		if size > maxInlineTail {
			want = 5
		}
		if n := requests(); n != want {
			t.Errorf("%d bytes: a chunk took %d requests, want %d", size, n, want)
		}
		if w, err = s.NewWriter(ctx, opts); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Commit(ctx, digest.FromBytes(b)); err != nil {
			t.Fatalf("Commit = %v", err)
		}
		w.Close()
		// Read the state, claim it, check the blob is new, store it,
		// remove the state; a tail object is read and removed too.
		want = 5
		if size > maxInlineTail {
			want = 7
		}
		if n := requests(); n != want {
			t.Errorf("%d bytes: the commit took %d requests, want %d", size, n, want)
		}
		for o := range s.core.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: "uploads/", Recursive: true}) {
			t.Errorf("%d bytes: %s is left after the commit (%v)", size, o.Key, o.Err)
		}
		rc, _, err := s.Open(ctx, digest.FromBytes(b), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%d bytes: the blob reads back as %d bytes, %v", size, len(got), err)
		}
	}
}

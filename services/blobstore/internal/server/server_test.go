package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
	"github.com/strata-build/strata/services/blobstore/internal/s3blob"
)

// serve runs a BlobService over store on a loopback listener until the test
// ends and returns a client of it.
func serve(t testing.TB, store blob.Store) *blobclient.Client {
	t.Helper()
	return serveWith(t, New(store, nil))
}

// serveWith runs impl on a loopback listener.
func serveWith(t testing.TB, impl *Server) *blobclient.Client {
	t.Helper()
	return blobclient.New(serveConn(t, impl))
}

// serveConn runs impl on a loopback listener and returns a connection to
// it, dialled with the extra options.
func serveConn(t testing.TB, impl *Server, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := grpcserver.New(grpcserver.Config{
		Listen: "127.0.0.1:0", MaxRecvMsgSize: 16 << 20, MaxSendMsgSize: 16 << 20,
		KeepaliveMinTime: 10 * time.Second, ShutdownTimeout: 5 * time.Second, LogLevel: "info",
	}, log, serverOpts...)
	if err != nil {
		t.Fatal(err)
	}
	blobv1.RegisterBlobServiceServer(srv.GRPC, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, nil) }()
	conn, err := grpcclient.Dial(lis.Addr().String(), grpcclient.Config{}, append(slices.Clip(dialOpts), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return conn
}

func newFS(t *testing.T) blob.Store {
	s, err := fsblob.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformanceOverGRPC(t *testing.T) {
	t.Run("fs", func(t *testing.T) {
		blobtest.TestStore(t, func(t *testing.T) blob.Store { return clientStore(t, newFS(t)) })
	})
	t.Run("s3", func(t *testing.T) {
		srv := harness.StartS3(t)
		n := 0
		blobtest.TestStore(t, func(t *testing.T) blob.Store {
			n++
			return clientStore(t, newS3(t, srv, fmt.Sprintf("grpc-%d", n)))
		})
	})
}

// TestReplicasOverGRPC runs the replica suite through two servers, each
// over its own store on one bucket, as two blob-store replicas run.
func TestReplicasOverGRPC(t *testing.T) {
	srv := harness.StartS3(t)
	n := 0
	blobtest.TestReplicas(t, func(t *testing.T) (blob.Store, blob.Store) {
		n++
		bucket := fmt.Sprintf("replicas-%d", n)
		return clientStore(t, newS3(t, srv, bucket)), clientStore(t, newS3(t, srv, bucket))
	})
}

func TestDamageOverGRPC(t *testing.T) {
	t.Run("fs", func(t *testing.T) {
		blobtest.TestDamage(t, func(t *testing.T) (blob.Store, blobtest.Damage) {
			root := t.TempDir()
			s, err := fsblob.New(root)
			if err != nil {
				t.Fatal(err)
			}
			return clientStore(t, s), func(t *testing.T, d digest.Digest, off int64) {
				blobtest.FlipByte(t, filepath.Join(root, "blobs", "sha256", d.Encoded()), off)
			}
		})
	})
	t.Run("s3", func(t *testing.T) {
		srv := harness.StartS3(t)
		n := 0
		blobtest.TestDamage(t, func(t *testing.T) (blob.Store, blobtest.Damage) {
			n++
			bucket := fmt.Sprintf("damage-%d", n)
			return clientStore(t, newS3(t, srv, bucket)), func(t *testing.T, d digest.Digest, off int64) {
				blobtest.FlipByte(t, filepath.Join(srv.Dir, bucket, "blobs", "sha256", d.Encoded()), off)
			}
		})
	})
}

// newS3 returns a store in a new bucket of srv, with the smallest parts S3
// allows so that multipart paths run on small blobs.
func newS3(t *testing.T, srv *harness.S3, bucket string) *s3blob.Store {
	t.Helper()
	s, err := s3blob.New(s3blob.Config{
		Endpoint: srv.Endpoint, Bucket: bucket, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, CreateBucket: true,
		PartSize: s3blob.MinPartSize, Concurrency: 3, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The options of serveWith: the bulk-transfer ones the service and its
// clients use.
var (
	serverOpts = blobclient.ServerOptions()
	dialOpts   = blobclient.DialOptions()
)

// ClientStore is a blob.Store over the gRPC client, so that the conformance
// suite runs through the client, the wire and the server. API is the
// generated client on the same connection, for what the client does not
// send (Put's one-message Write).
type ClientStore struct {
	C   *blobclient.Client
	API blobv1.BlobServiceClient
}

// clientStore serves store on a loopback listener until the test ends and
// returns a ClientStore of it.
func clientStore(t testing.TB, store blob.Store) ClientStore {
	t.Helper()
	conn := serveConn(t, New(store, nil))
	return ClientStore{C: blobclient.New(conn), API: blobv1.NewBlobServiceClient(conn)}
}

// Put sends the whole blob in the Write's first message, with the commit.
func (s ClientStore) Put(ctx context.Context, d digest.Digest, mediaType string, data []byte) (blob.Info, error) {
	return writeOneShot(ctx, s.API, blobclient.NewRef(), d, mediaType, data)
}

// writeOneShot writes data as the blob d in one message that declares its
// digest and size and commits, and returns the committed blob.
func writeOneShot(ctx context.Context, api blobv1.BlobServiceClient, ref string, d digest.Digest, mediaType string, data []byte) (blob.Info, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.Write(ctx)
	if err != nil {
		return blob.Info{}, err
	}
	size := int64(len(data))
	req := &blobv1.WriteRequest{Ref: ref, Digest: string(d), Size: &size, MediaType: mediaType, Data: data, Commit: true}
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return blob.Info{}, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return blob.Info{}, err
		}
		if resp.GetCommitted() {
			b := resp.GetBlob()
			return blob.Info{Digest: digest.Digest(b.GetDigest()), Size: b.GetSize(), CreatedAt: b.GetCreatedAt().AsTime()}, nil
		}
	}
}

func (s ClientStore) Stat(ctx context.Context, d digest.Digest) (blob.Info, error) {
	i, err := s.C.Stat(ctx, d)
	return blob.Info(i), err
}

func (s ClientStore) Open(ctx context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, blob.Info, error) {
	r, err := s.C.Open(ctx, d, offset, length)
	if err != nil {
		return nil, blob.Info{}, err
	}
	return r, blob.Info{Digest: d, Size: r.Size()}, nil
}

func (s ClientStore) NewWriter(ctx context.Context, opts blob.WriterOptions) (blob.Writer, error) {
	wopts := []blobclient.WriterOption{blobclient.WithRef(opts.Ref), blobclient.WithMediaType(opts.MediaType)}
	if opts.ResumeOnly {
		wopts = append(wopts, blobclient.WithResumeOnly())
	}
	w, err := s.C.NewWriter(ctx, opts.Expected, opts.Size, wopts...)
	if err != nil {
		return nil, err
	}
	return clientWriter{w}, nil
}

func (s ClientStore) Delete(ctx context.Context, d digest.Digest) error { return s.C.Delete(ctx, d) }

// List pages with limit as the page size and after as the page token, which
// is what the server's tokens are.
func (s ClientStore) List(ctx context.Context, after digest.Digest, limit int) ([]blob.Info, error) {
	if limit <= 0 {
		return nil, nil
	}
	infos, _, err := s.C.List(ctx, limit, string(after))
	out := make([]blob.Info, len(infos))
	for i, info := range infos {
		out[i] = blob.Info(info)
	}
	return out, err
}

func (s ClientStore) Upload(ctx context.Context, ref string) (blob.Upload, error) {
	u, err := s.C.UploadStatus(ctx, ref)
	return uploadOf(u), err
}

func uploadOf(u blobclient.Upload) blob.Upload {
	return blob.Upload{Ref: u.Ref, Expected: u.Digest, Size: u.Size, Offset: u.Offset, StartedAt: u.StartedAt, UpdatedAt: u.UpdatedAt}
}

func (s ClientStore) Abort(ctx context.Context, ref string) error { return s.C.AbortUpload(ctx, ref) }

func (s ClientStore) Uploads(ctx context.Context) ([]blob.Upload, error) {
	ups, err := s.C.Uploads(ctx)
	out := make([]blob.Upload, len(ups))
	for i, u := range ups {
		out[i] = uploadOf(u)
	}
	return out, err
}

// CleanUploads has no RPC: the janitor runs inside the server. The adapter
// aborts what the janitor would, through the API.
func (s ClientStore) CleanUploads(ctx context.Context, before time.Time) (int, error) {
	ups, err := s.C.Uploads(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, u := range ups {
		if u.UpdatedAt.Before(before) && s.C.AbortUpload(ctx, u.Ref) == nil {
			n++
		}
	}
	return n, nil
}

type clientWriter struct{ w *blobclient.Writer }

func (w clientWriter) Write(p []byte) (int, error) { return w.w.Write(p) }
func (w clientWriter) Offset() int64               { return w.w.Offset() }
func (w clientWriter) Close() error                { return w.w.Close() }

func (w clientWriter) Commit(ctx context.Context, expected digest.Digest) (blob.Info, error) {
	info, err := w.w.CommitDigest(ctx, expected)
	return blob.Info(info), err
}

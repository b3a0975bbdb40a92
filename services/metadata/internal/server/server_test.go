package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/grpcserver"
	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
	"github.com/strata-build/strata/services/metadata/internal/sqlstore"
)

// allBlobs is a blob store that holds every blob: the conformance suite
// checks the metadata API, and the real blob store's part is tested with
// the real service (cmd/strata-metadata).
type allBlobs struct{}

func (allBlobs) Exists(_ context.Context, ds []digest.Digest) (map[digest.Digest]blobclient.Info, error) {
	out := map[digest.Digest]blobclient.Info{}
	for _, d := range ds {
		out[d] = blobclient.Info{Digest: d}
	}
	return out, nil
}

func (allBlobs) List(context.Context, int, string) ([]blobclient.Info, string, error) {
	return nil, "", nil
}

func (allBlobs) Delete(context.Context, digest.Digest) error { return nil }

// serve runs the ImageService over images on a loopback listener until the
// test ends and returns a client of it.
func serve(t testing.TB, images *image.Service, blobs image.Blobs) metadatav1.ImageServiceClient {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := grpcserver.New(grpcserver.Config{
		Listen: "127.0.0.1:0", MaxRecvMsgSize: 16 << 20, MaxSendMsgSize: 16 << 20,
		KeepaliveMinTime: 10 * time.Second, ShutdownTimeout: 5 * time.Second, LogLevel: "info",
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gc := &image.Collector{Images: images, Blobs: blobs, Grace: time.Hour, Log: log}
	metadatav1.RegisterImageServiceServer(srv.GRPC, New(images, blobs, gc, log, nil, ctx.Done()))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, nil) }()
	conn, err := grpcclient.Dial(lis.Addr().String(), grpcclient.Config{})
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
	return metadatav1.NewImageServiceClient(conn)
}

func newSQLite(t testing.TB, now func() time.Time) *image.Service {
	t.Helper()
	db, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "metadata.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return image.New(db, image.Options{Now: now, EventPoll: 20 * time.Millisecond})
}

func TestConformanceOverGRPC(t *testing.T) {
	imagetest.TestStore(t, func(t *testing.T, now func() time.Time) image.Store {
		return Client{serve(t, newSQLite(t, now), allBlobs{})}
	})
}

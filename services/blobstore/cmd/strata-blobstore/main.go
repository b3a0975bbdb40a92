// Command strata-blobstore serves strata.blob.v1.BlobService.
package main

import (
	"context"
	"log/slog"
	"os"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/grpcserver"
)

func main() {
	os.Exit(grpcserver.Binary{
		Name:          "strata-blobstore",
		DefaultListen: ":50053",
		Wire: func(_ context.Context, srv *grpcserver.Server, _ *slog.Logger) (func(), error) {
			blobv1.RegisterBlobServiceServer(srv.GRPC, blobv1.UnimplementedBlobServiceServer{})
			return nil, nil
		},
	}.Main(os.Args[1:]))
}

// Command strata-metadata serves strata.metadata.v1.ImageService.
package main

import (
	"context"
	"log/slog"
	"os"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/grpcserver"
)

func main() {
	os.Exit(grpcserver.Binary{
		Name:          "strata-metadata",
		DefaultListen: ":50052",
		Wire: func(_ context.Context, srv *grpcserver.Server, _ *slog.Logger) (func(), error) {
			metadatav1.RegisterImageServiceServer(srv.GRPC, metadatav1.UnimplementedImageServiceServer{})
			return nil, nil
		},
	}.Main(os.Args[1:]))
}

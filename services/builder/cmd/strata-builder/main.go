// Command strata-builder serves strata.builder.v1.BuildService.
package main

import (
	"context"
	"log/slog"
	"os"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/grpcserver"
)

func main() {
	os.Exit(grpcserver.Binary{
		Name:          "strata-builder",
		DefaultListen: ":50051",
		Wire: func(_ context.Context, srv *grpcserver.Server, _ *slog.Logger) (func(), error) {
			builderv1.RegisterBuildServiceServer(srv.GRPC, builderv1.UnimplementedBuildServiceServer{})
			return nil, nil
		},
	}.Main(os.Args[1:]))
}

// Package server adapts the builder's domain packages to the gRPC
// BuildService: it converts messages and streams. The Build RPC's context
// protocol is buildctx's and the build itself build's; Import, Load, Save,
// Pull and Push are transfer's. Each group of RPCs has its file: build.go
// the Build RPC, transfer.go the others.
package server

import (
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// Server serves strata.builder.v1.BuildService.
type Server struct {
	builderv1.UnimplementedBuildServiceServer

	transfers *transfer.Service
	builds    *Builds
}

// New returns a Server that serves builds with builds and the image
// transfers with transfers.
func New(builds *Builds, transfers *transfer.Service) *Server {
	return &Server{builds: builds, transfers: transfers}
}

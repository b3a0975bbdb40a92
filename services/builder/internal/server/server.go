// Package server adapts the builder's domain packages to the gRPC
// BuildService: it converts messages and streams. The Build RPC's context
// protocol is buildctx's and the build itself build's; Import, Load and Save
// are archive's, Pull and Push transfer's. Each group of RPCs has its file: build.go
// the Build RPC, transfer.go the others.
package server

import (
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// Server serves strata.builder.v1.BuildService.
type Server struct {
	builderv1.UnimplementedBuildServiceServer

	transfers *transfer.Service
	archives  *archive.Service
	builds    *Builds
}

// New returns a Server that serves builds with builds, pulls and pushes with
// transfers, and imports, loads and saves with archives.
func New(builds *Builds, transfers *transfer.Service, archives *archive.Service) *Server {
	return &Server{builds: builds, transfers: transfers, archives: archives}
}

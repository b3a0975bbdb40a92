// Package server adapts the builder's domain packages to the gRPC
// BuildService: it converts messages and streams. The Build RPC's context
// protocol is buildctx's and the build itself build's; Import, Load and Save
// are archive's, Pull and Push transfer's, the cache mount RPCs cachemount's.
// Each group of RPCs has its file: build.go the Build RPC, builds.go the
// builds as resources, cachemounts.go the cache mounts, transfer.go the
// others.
package server

import (
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// Server serves strata.builder.v1.BuildService.
type Server struct {
	builderv1.UnimplementedBuildServiceServer

	transfers   *transfer.Service
	archives    *archive.Service
	builds      *Builds
	cacheMounts *cachemount.Store
}

// New returns a Server that serves builds with builds, pulls and pushes with
// transfers, imports, loads and saves with archives, and lists and prunes
// the cache mounts of cacheMounts (nil: UNIMPLEMENTED).
func New(builds *Builds, transfers *transfer.Service, archives *archive.Service, cacheMounts *cachemount.Store) *Server {
	return &Server{builds: builds, transfers: transfers, archives: archives, cacheMounts: cacheMounts}
}

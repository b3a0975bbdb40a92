// Package server adapts the builder's domain packages to the gRPC
// BuildService: it converts messages and streams, and nothing else. Each
// group of RPCs has its file: build.go the Build RPC, transfer.go import,
// load, save, pull and push.
package server

import (
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// Server serves strata.builder.v1.BuildService. RPCs whose dependencies are
// not given answer UNIMPLEMENTED.
type Server struct {
	builderv1.UnimplementedBuildServiceServer

	transfers *transfer.Service
	builds    *Builds
}

// Option gives the Server one of its dependencies.
type Option func(*Server)

// WithTransfers serves Import, Load, Save, Pull and Push with t.
func WithTransfers(t *transfer.Service) Option { return func(s *Server) { s.transfers = t } }

// New returns a Server with the given dependencies.
func New(opts ...Option) *Server {
	s := &Server{}
	for _, o := range opts {
		o(s)
	}
	return s
}

package server

import (
	"context"

	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/builds"
)

// ListBuilds lists the builder's builds, newest first.
func (s *Server) ListBuilds(ctx context.Context, req *builderv1.ListBuildsRequest) (*builderv1.ListBuildsResponse, error) {
	me := requester(ctx)
	resp := &builderv1.ListBuildsResponse{}
	for _, b := range s.builds.registry.List() {
		info := b.Info()
		if req.GetActiveOnly() && info.GetEnded() != nil {
			continue
		}
		if req.GetMine() && info.GetRequester() != me {
			continue
		}
		resp.Builds = append(resp.Builds, info)
	}
	return resp, nil
}

// GetBuild returns one build.
func (s *Server) GetBuild(ctx context.Context, req *builderv1.GetBuildRequest) (*builderv1.GetBuildResponse, error) {
	b, err := s.builds.registry.Get(req.GetBuildId())
	if err != nil {
		return nil, err
	}
	return &builderv1.GetBuildResponse{Build: b.Info()}, nil
}

// WatchBuild streams a build's log, then its live events and its end.
func (s *Server) WatchBuild(req *builderv1.WatchBuildRequest, stream grpc.ServerStreamingServer[builderv1.WatchBuildResponse]) error {
	b, err := s.builds.registry.Get(req.GetBuildId())
	if err != nil {
		return err
	}
	// A build's output may hold what its requester alone should see.
	if err := mayTouch(stream.Context(), b, "watch"); err != nil {
		return err
	}
	res, err := b.Watch(stream.Context(), req.GetFromSequence(), func(ev *builderv1.BuildEvent) error {
		return stream.Send(&builderv1.WatchBuildResponse{Response: &builderv1.WatchBuildResponse_Event{Event: ev}})
	})
	if err != nil {
		return err
	}
	return stream.Send(&builderv1.WatchBuildResponse{Response: &builderv1.WatchBuildResponse_Result{Result: res}})
}

// CancelBuild cancels a queued or running build.
func (s *Server) CancelBuild(ctx context.Context, req *builderv1.CancelBuildRequest) (*builderv1.CancelBuildResponse, error) {
	b, err := s.builds.registry.Get(req.GetBuildId())
	if err != nil {
		return nil, err
	}
	if err := mayTouch(ctx, b, "cancel"); err != nil {
		return nil, err
	}
	if err := b.Cancel(builds.ErrCanceledByRequest); err != nil {
		return nil, err
	}
	return &builderv1.CancelBuildResponse{Build: b.Info()}, nil
}

// mayTouch says whether the caller of ctx may watch or cancel b: its
// requester may, and so may an admin; without auth, everyone.
func mayTouch(ctx context.Context, b *builds.Build, verb string) error {
	id, ok := auth.IdentityFrom(ctx)
	if !ok || id.Name == b.Requester() || id.Role.Includes(auth.RoleAdmin) {
		return nil
	}
	return errdefs.New(errdefs.ErrPermissionDenied, "%s build %s: it is %s's; only they or an admin may %s it", verb, b.ID(), b.Requester(), verb).WithReason("BUILD_NOT_YOURS")
}

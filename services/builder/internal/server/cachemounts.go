package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
)

// ListCacheMounts lists the builder's RUN --mount=type=cache directories.
func (s *Server) ListCacheMounts(ctx context.Context, _ *builderv1.ListCacheMountsRequest) (*builderv1.ListCacheMountsResponse, error) {
	if s.cacheMounts == nil {
		return nil, errdefs.Unimplemented("this builder keeps no cache mounts")
	}
	resp := &builderv1.ListCacheMountsResponse{}
	for _, u := range s.cacheMounts.Usage() {
		resp.CacheMounts = append(resp.CacheMounts, cacheMountProto(u))
		resp.TotalSize += u.Size
	}
	return resp, nil
}

// PruneCacheMounts removes the cache mount directories the request
// chooses that no step uses.
func (s *Server) PruneCacheMounts(ctx context.Context, req *builderv1.PruneCacheMountsRequest) (*builderv1.PruneCacheMountsResponse, error) {
	if s.cacheMounts == nil {
		return nil, errdefs.Unimplemented("this builder keeps no cache mounts")
	}
	opts := cachemount.PruneOptions{IDs: req.GetIds(), KeepBytes: req.GetKeepBytes()}
	if req.GetKeepBytes() < 0 {
		return nil, errdefs.InvalidArgument("keep_bytes is %d; it must not be negative", req.GetKeepBytes())
	}
	if d := req.GetUnusedFor(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, errdefs.InvalidArgument("unused_for %v: it must be a duration of at least 0", d.AsDuration())
		}
		opts.UnusedFor = d.AsDuration()
	}
	resp := &builderv1.PruneCacheMountsResponse{}
	for _, u := range s.cacheMounts.Prune(opts) {
		resp.Removed = append(resp.Removed, cacheMountProto(u))
		resp.SpaceReclaimed += u.Size
	}
	return resp, nil
}

func cacheMountProto(u cachemount.Usage) *builderv1.CacheMount {
	m := &builderv1.CacheMount{Id: u.ID, Source: u.Source, Size: u.Size, InUse: u.InUse}
	if !u.LastUsed.IsZero() {
		m.LastUsed = timestamppb.New(u.LastUsed)
	}
	return m
}

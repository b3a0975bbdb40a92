package client

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// CacheMount is one directory of RUN --mount=type=cache the builder keeps
// between builds: its id, source, size, last use and whether a step uses
// it now.
type CacheMount = builderv1.CacheMount

// CacheMountUsage is what the builder's cache mounts hold.
type CacheMountUsage struct {
	// Mounts are the cache mounts, most recently used first.
	Mounts []*CacheMount
	// TotalSize is the bytes they hold in all.
	TotalSize int64
}

// CacheMounts lists the builder's cache mounts (`strata builder du`).
func (c *Client) CacheMounts(ctx context.Context) (CacheMountUsage, error) {
	builder, err := c.builder()
	if err != nil {
		return CacheMountUsage{}, err
	}
	resp, err := builder.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{})
	if err != nil {
		return CacheMountUsage{}, err
	}
	return CacheMountUsage{Mounts: resp.GetCacheMounts(), TotalSize: resp.GetTotalSize()}, nil
}

// PruneCacheMountsOptions choose the cache mounts PruneCacheMounts
// removes; the zero value removes every one no step uses.
type PruneCacheMountsOptions struct {
	// IDs limits the prune to these cache ids.
	IDs []string
	// UnusedFor limits it to the cache mounts not used for this long.
	UnusedFor time.Duration
	// KeepBytes stops it once the cache mounts hold at most this many
	// bytes, least recently used removed first.
	KeepBytes int64
}

// CacheMountsPruneReport is what PruneCacheMounts removed.
type CacheMountsPruneReport struct {
	// Removed are the cache mounts removed, least recently used first.
	Removed []*CacheMount
	// SpaceReclaimed is the bytes they held.
	SpaceReclaimed int64
}

// PruneCacheMounts removes the builder's cache mounts that no step uses
// (`strata builder prune`); it needs the admin role.
func (c *Client) PruneCacheMounts(ctx context.Context, opts PruneCacheMountsOptions) (CacheMountsPruneReport, error) {
	builder, err := c.builder()
	if err != nil {
		return CacheMountsPruneReport{}, err
	}
	req := &builderv1.PruneCacheMountsRequest{Ids: opts.IDs, KeepBytes: opts.KeepBytes}
	if opts.UnusedFor > 0 {
		req.UnusedFor = durationpb.New(opts.UnusedFor)
	}
	resp, err := builder.PruneCacheMounts(ctx, req)
	if err != nil {
		return CacheMountsPruneReport{}, err
	}
	return CacheMountsPruneReport{Removed: resp.GetRemoved(), SpaceReclaimed: resp.GetSpaceReclaimed()}, nil
}

package server

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

// Client is an image.Store over the gRPC API, so that the conformance suite
// runs through a real listener too.
type Client struct {
	C metadatav1.ImageServiceClient
}

var _ image.Store = Client{}

// PutImage implements image.Store.
func (c Client) PutImage(ctx context.Context, img *metadatav1.Image, opts image.PutOptions) (*metadatav1.Image, error) {
	r, err := c.C.PutImage(ctx, &metadatav1.PutImageRequest{Image: img, Tags: opts.Tags, RepoDigests: opts.RepoDigests, Action: opts.Action})
	return r.GetImage(), err
}

// GetImage implements image.Store.
func (c Client) GetImage(ctx context.Context, ref string) (*metadatav1.Image, error) {
	r, err := c.C.GetImage(ctx, &metadatav1.GetImageRequest{Reference: ref})
	return r.GetImage(), err
}

// InspectImage implements image.Store.
func (c Client) InspectImage(ctx context.Context, ref string) (*metadatav1.ImageInspect, []byte, error) {
	r, err := c.C.InspectImage(ctx, &metadatav1.InspectImageRequest{Reference: ref})
	return r.GetImage(), r.GetDockerJson(), err
}

// ListImages implements image.Store.
func (c Client) ListImages(ctx context.Context, opts image.ListOptions) ([]*metadatav1.ImageSummary, string, error) {
	r, err := c.C.ListImages(ctx, &metadatav1.ListImagesRequest{Filters: opts.Filters, All: opts.All, PageSize: int32(opts.PageSize), PageToken: opts.PageToken})
	return r.GetImages(), r.GetNextPageToken(), err
}

// ImageHistory implements image.Store.
func (c Client) ImageHistory(ctx context.Context, ref string) ([]*metadatav1.HistoryRow, error) {
	r, err := c.C.ImageHistory(ctx, &metadatav1.ImageHistoryRequest{Reference: ref})
	return r.GetRows(), err
}

// TagImage implements image.Store.
func (c Client) TagImage(ctx context.Context, source, target string) (string, string, error) {
	r, err := c.C.TagImage(ctx, &metadatav1.TagImageRequest{Source: source, Target: target})
	return r.GetImageId(), r.GetTag(), err
}

// UntagImage implements image.Store.
func (c Client) UntagImage(ctx context.Context, ref string) (string, error) {
	r, err := c.C.UntagImage(ctx, &metadatav1.UntagImageRequest{Reference: ref})
	return r.GetImageId(), err
}

// DeleteImage implements image.Store.
func (c Client) DeleteImage(ctx context.Context, ref string, opts image.DeleteOptions) ([]*metadatav1.DeletedItem, error) {
	r, err := c.C.DeleteImage(ctx, &metadatav1.DeleteImageRequest{Reference: ref, Force: opts.Force, NoPrune: opts.NoPrune})
	return r.GetItems(), err
}

// PruneImages implements image.Store.
func (c Client) PruneImages(ctx context.Context, all bool, filters []*metadatav1.Filter) ([]*metadatav1.DeletedItem, int64, error) {
	r, err := c.C.PruneImages(ctx, &metadatav1.PruneImagesRequest{All: all, Filters: filters})
	return r.GetItems(), r.GetSpaceReclaimed(), err
}

// PutCacheRecord implements image.Store.
func (c Client) PutCacheRecord(ctx context.Context, rec *metadatav1.CacheRecord, replaces string) (*metadatav1.CacheRecord, error) {
	r, err := c.C.PutCacheRecord(ctx, &metadatav1.PutCacheRecordRequest{Record: rec, ReplacesImageId: replaces})
	return r.GetRecord(), err
}

// LookupCacheRecords implements image.Store.
func (c Client) LookupCacheRecords(ctx context.Context, keys []string) ([]*metadatav1.CacheRecord, error) {
	r, err := c.C.LookupCacheRecords(ctx, &metadatav1.LookupCacheRecordsRequest{Keys: keys})
	return r.GetRecords(), err
}

// ListCacheRecords implements image.Store.
func (c Client) ListCacheRecords(ctx context.Context, pageSize int, pageToken string) ([]*metadatav1.CacheRecord, string, error) {
	r, err := c.C.ListCacheRecords(ctx, &metadatav1.ListCacheRecordsRequest{PageSize: int32(pageSize), PageToken: pageToken})
	return r.GetRecords(), r.GetNextPageToken(), err
}

// PruneCacheRecords implements image.Store.
func (c Client) PruneCacheRecords(ctx context.Context, unusedFor time.Duration) ([]string, error) {
	r, err := c.C.PruneCacheRecords(ctx, &metadatav1.PruneCacheRecordsRequest{UnusedFor: durationpb.New(unusedFor)})
	return r.GetKeys(), err
}

// ReferencedBlobs implements image.Store.
func (c Client) ReferencedBlobs(ctx context.Context, pageSize int, pageToken string) ([]string, string, error) {
	r, err := c.C.ListReferencedBlobs(ctx, &metadatav1.ListReferencedBlobsRequest{PageSize: int32(pageSize), PageToken: pageToken})
	return r.GetDigests(), r.GetNextPageToken(), err
}

// CreateLease implements image.Store.
func (c Client) CreateLease(ctx context.Context, id string, expireAfter time.Duration) (*metadatav1.Lease, error) {
	req := &metadatav1.CreateLeaseRequest{Id: id}
	if expireAfter != 0 {
		req.ExpireAfter = durationpb.New(expireAfter)
	}
	r, err := c.C.CreateLease(ctx, req)
	return r.GetLease(), err
}

// AddLeaseBlobs implements image.Store.
func (c Client) AddLeaseBlobs(ctx context.Context, id string, digests []string) ([]string, error) {
	r, err := c.C.AddLeaseResource(ctx, &metadatav1.AddLeaseResourceRequest{LeaseId: id, Digests: digests})
	return r.GetReferenced(), err
}

// DeleteLease implements image.Store.
func (c Client) DeleteLease(ctx context.Context, id string) error {
	_, err := c.C.DeleteLease(ctx, &metadatav1.DeleteLeaseRequest{LeaseId: id})
	return err
}

// IsReferenced implements image.Store by listing every referenced blob: the
// API has no point query, and tests are its only caller.
func (c Client) IsReferenced(ctx context.Context, digests []string) (map[string]bool, error) {
	want := map[string]bool{}
	for _, d := range digests {
		want[d] = true
	}
	out := map[string]bool{}
	token := ""
	for {
		page, next, err := c.ReferencedBlobs(ctx, 1000, token)
		if err != nil {
			return nil, err
		}
		for _, d := range page {
			if want[d] {
				out[d] = true
			}
		}
		if next == "" {
			return out, nil
		}
		token = next
	}
}

// DiskUsage implements image.Store.
func (c Client) DiskUsage(ctx context.Context) (*metadatav1.GetDiskUsageResponse, error) {
	return c.C.GetDiskUsage(ctx, &metadatav1.GetDiskUsageRequest{})
}

// WatchEvents implements image.Store.
func (c Client) WatchEvents(ctx context.Context, since time.Time, filters []*metadatav1.Filter, fn func(*metadatav1.Event) error) error {
	req := &metadatav1.WatchEventsRequest{Filters: filters}
	if !since.IsZero() {
		req.Since = timestamppb.New(since)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.C.WatchEvents(ctx, req)
	if err != nil {
		return err
	}
	// The first event, or the headers, say the watch has started on the
	// server: only then may the caller rely on seeing what follows.
	if _, err := stream.Header(); err != nil {
		return err
	}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ctx.Err()
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if err := fn(r.GetEvent()); err != nil {
			return err
		}
	}
}

// PutManifest implements image.Store.
func (c Client) PutManifest(ctx context.Context, repo string, m *metadatav1.Manifest, opts image.ManifestOptions) (*metadatav1.Manifest, error) {
	r, err := c.C.PutManifest(ctx, &metadatav1.PutManifestRequest{Repository: repo, Tags: opts.Tags, Manifest: m, Image: opts.Image})
	return r.GetManifest(), err
}

// GetManifest implements image.Store.
func (c Client) GetManifest(ctx context.Context, repo, ref string) (*metadatav1.Manifest, error) {
	r, err := c.C.GetManifest(ctx, &metadatav1.GetManifestRequest{Repository: repo, Reference: ref})
	return r.GetManifest(), err
}

// DeleteManifest implements image.Store.
func (c Client) DeleteManifest(ctx context.Context, repo, ref string) ([]string, error) {
	r, err := c.C.DeleteManifest(ctx, &metadatav1.DeleteManifestRequest{Repository: repo, Reference: ref})
	return r.GetUntagged(), err
}

// ListTags implements image.Store.
func (c Client) ListTags(ctx context.Context, repo string, n int, last string) ([]string, bool, error) {
	r, err := c.C.ListTags(ctx, &metadatav1.ListTagsRequest{Repository: repo, PageSize: int32(n), Last: last})
	return r.GetTags(), r.GetMore(), err
}

// ListReferrers implements image.Store.
func (c Client) ListReferrers(ctx context.Context, repo, subject, artifactType string) ([]*metadatav1.Manifest, error) {
	r, err := c.C.ListReferrers(ctx, &metadatav1.ListReferrersRequest{Repository: repo, Digest: subject, ArtifactType: artifactType})
	return r.GetReferrers(), err
}

// LinkBlob implements image.Store.
func (c Client) LinkBlob(ctx context.Context, repo, digest string) error {
	_, err := c.C.LinkBlob(ctx, &metadatav1.LinkBlobRequest{Repository: repo, Digest: digest})
	return err
}

// UnlinkBlob implements image.Store.
func (c Client) UnlinkBlob(ctx context.Context, repo, digest string) error {
	_, err := c.C.UnlinkBlob(ctx, &metadatav1.UnlinkBlobRequest{Repository: repo, Digest: digest})
	return err
}

// HasBlob implements image.Store.
func (c Client) HasBlob(ctx context.Context, repo, digest string) (bool, error) {
	r, err := c.C.HasBlob(ctx, &metadatav1.HasBlobRequest{Repository: repo, Digest: digest})
	return r.GetFound(), err
}

// Package server serves strata.metadata.v1.ImageService over an image.Store:
// it converts messages and checks with the blob store that an image's blobs
// exist before recording it. Docker's rules live in package image, and so
// does garbage collection (image.Collector).
package server

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

// Server implements metadatav1.ImageServiceServer.
type Server struct {
	metadatav1.UnimplementedImageServiceServer
	images *image.Service
	blobs  image.Blobs
	gc     *image.Collector
	log    *slog.Logger
	now    func() time.Time
	// stopping is closed when the service shuts down: event streams end
	// then instead of holding up a graceful stop.
	stopping <-chan struct{}
}

// New returns the server. now is time.Now when nil; event streams end when
// stopping closes.
func New(images *image.Service, blobs image.Blobs, gc *image.Collector, log *slog.Logger, now func() time.Time, stopping <-chan struct{}) *Server {
	if now == nil {
		now = time.Now
	}
	return &Server{images: images, blobs: blobs, gc: gc, log: log, now: now, stopping: stopping}
}

// neededBlobs returns the digests an image record names: manifest, config
// and layers. Malformed ones are left for PutImage to refuse.
func neededBlobs(img *metadatav1.Image) []digest.Digest {
	var out []digest.Digest
	add := func(s string) {
		if d, err := digest.Parse(s); err == nil {
			out = append(out, d)
		}
	}
	add(img.GetManifest().GetDigest())
	if len(img.GetConfig()) > 0 {
		out = append(out, digest.FromBytes(img.GetConfig()))
	}
	for _, l := range img.GetLayers() {
		add(l.GetDigest())
	}
	return out
}

// PutImage implements metadatav1.ImageServiceServer.
func (s *Server) PutImage(ctx context.Context, req *metadatav1.PutImageRequest) (*metadatav1.PutImageResponse, error) {
	checked := s.now()
	need := neededBlobs(req.GetImage())
	found, err := s.blobs.Exists(ctx, need)
	if err != nil {
		return nil, errdefs.Unavailable("checking the image's blobs with the blob store: %v", err)
	}
	var missing []string
	for _, d := range need {
		if _, ok := found[d]; !ok {
			missing = append(missing, d.String())
		}
	}
	if len(missing) > 0 {
		id := ""
		if len(req.GetImage().GetConfig()) > 0 {
			id = digest.FromBytes(req.GetImage().GetConfig()).String()
		}
		return nil, errdefs.FailedPrecondition("image %s: the blob store does not hold %s", id, strings.Join(missing, ", ")).
			WithReason("BLOBS_MISSING").WithDetail("missing", strings.Join(missing, ","))
	}
	img, err := s.images.PutImage(ctx, req.GetImage(), image.PutOptions{
		Tags: req.GetTags(), RepoDigests: req.GetRepoDigests(), Action: req.GetAction(), BlobsCheckedAt: checked,
	})
	if err != nil {
		return nil, err
	}
	return &metadatav1.PutImageResponse{Image: img}, nil
}

// GetImage implements metadatav1.ImageServiceServer.
func (s *Server) GetImage(ctx context.Context, req *metadatav1.GetImageRequest) (*metadatav1.GetImageResponse, error) {
	img, err := s.images.GetImage(ctx, req.GetReference())
	if err != nil {
		return nil, err
	}
	return &metadatav1.GetImageResponse{Image: img}, nil
}

// InspectImage implements metadatav1.ImageServiceServer.
func (s *Server) InspectImage(ctx context.Context, req *metadatav1.InspectImageRequest) (*metadatav1.InspectImageResponse, error) {
	insp, raw, err := s.images.InspectImage(ctx, req.GetReference())
	if err != nil {
		return nil, err
	}
	return &metadatav1.InspectImageResponse{Image: insp, DockerJson: raw, DockerJsonText: string(raw)}, nil
}

// ListImages implements metadatav1.ImageServiceServer.
func (s *Server) ListImages(ctx context.Context, req *metadatav1.ListImagesRequest) (*metadatav1.ListImagesResponse, error) {
	sums, next, err := s.images.ListImages(ctx, image.ListOptions{
		Filters: req.GetFilters(), All: req.GetAll(), PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	return &metadatav1.ListImagesResponse{Images: sums, NextPageToken: next}, nil
}

// ImageHistory implements metadatav1.ImageServiceServer.
func (s *Server) ImageHistory(ctx context.Context, req *metadatav1.ImageHistoryRequest) (*metadatav1.ImageHistoryResponse, error) {
	rows, err := s.images.ImageHistory(ctx, req.GetReference())
	if err != nil {
		return nil, err
	}
	return &metadatav1.ImageHistoryResponse{Rows: rows}, nil
}

// TagImage implements metadatav1.ImageServiceServer.
func (s *Server) TagImage(ctx context.Context, req *metadatav1.TagImageRequest) (*metadatav1.TagImageResponse, error) {
	id, tag, err := s.images.TagImage(ctx, req.GetSource(), req.GetTarget())
	if err != nil {
		return nil, err
	}
	return &metadatav1.TagImageResponse{ImageId: id, Tag: tag}, nil
}

// UntagImage implements metadatav1.ImageServiceServer.
func (s *Server) UntagImage(ctx context.Context, req *metadatav1.UntagImageRequest) (*metadatav1.UntagImageResponse, error) {
	id, err := s.images.UntagImage(ctx, req.GetReference())
	if err != nil {
		return nil, err
	}
	return &metadatav1.UntagImageResponse{ImageId: id}, nil
}

// DeleteImage implements metadatav1.ImageServiceServer.
func (s *Server) DeleteImage(ctx context.Context, req *metadatav1.DeleteImageRequest) (*metadatav1.DeleteImageResponse, error) {
	items, err := s.images.DeleteImage(ctx, req.GetReference(), image.DeleteOptions{Force: req.GetForce(), NoPrune: req.GetNoPrune()})
	if err != nil {
		return nil, err
	}
	return &metadatav1.DeleteImageResponse{Items: items}, nil
}

// PruneImages implements metadatav1.ImageServiceServer.
func (s *Server) PruneImages(ctx context.Context, req *metadatav1.PruneImagesRequest) (*metadatav1.PruneImagesResponse, error) {
	items, reclaimed, err := s.images.PruneImages(ctx, req.GetAll(), req.GetFilters())
	if err != nil {
		return nil, err
	}
	return &metadatav1.PruneImagesResponse{Items: items, SpaceReclaimed: reclaimed}, nil
}

// PutCacheRecord implements metadatav1.ImageServiceServer.
func (s *Server) PutCacheRecord(ctx context.Context, req *metadatav1.PutCacheRecordRequest) (*metadatav1.PutCacheRecordResponse, error) {
	rec, err := s.images.PutCacheRecord(ctx, req.GetRecord(), req.GetReplacesImageId())
	if err != nil {
		return nil, err
	}
	return &metadatav1.PutCacheRecordResponse{Record: rec}, nil
}

// LookupCacheRecords implements metadatav1.ImageServiceServer.
func (s *Server) LookupCacheRecords(ctx context.Context, req *metadatav1.LookupCacheRecordsRequest) (*metadatav1.LookupCacheRecordsResponse, error) {
	recs, err := s.images.LookupCacheRecords(ctx, req.GetKeys())
	if err != nil {
		return nil, err
	}
	return &metadatav1.LookupCacheRecordsResponse{Records: recs}, nil
}

// ListCacheRecords implements metadatav1.ImageServiceServer.
func (s *Server) ListCacheRecords(ctx context.Context, req *metadatav1.ListCacheRecordsRequest) (*metadatav1.ListCacheRecordsResponse, error) {
	recs, next, err := s.images.ListCacheRecords(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &metadatav1.ListCacheRecordsResponse{Records: recs, NextPageToken: next}, nil
}

// PruneCacheRecords implements metadatav1.ImageServiceServer.
func (s *Server) PruneCacheRecords(ctx context.Context, req *metadatav1.PruneCacheRecordsRequest) (*metadatav1.PruneCacheRecordsResponse, error) {
	var unused time.Duration
	if d := req.GetUnusedFor(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, errdefs.InvalidArgument("unused_for: %v", err)
		}
		unused = d.AsDuration()
	}
	keys, err := s.images.PruneCacheRecords(ctx, unused)
	if err != nil {
		return nil, err
	}
	return &metadatav1.PruneCacheRecordsResponse{Keys: keys, Count: int64(len(keys))}, nil
}

// ListReferencedBlobs implements metadatav1.ImageServiceServer.
func (s *Server) ListReferencedBlobs(ctx context.Context, req *metadatav1.ListReferencedBlobsRequest) (*metadatav1.ListReferencedBlobsResponse, error) {
	ds, next, err := s.images.ReferencedBlobs(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &metadatav1.ListReferencedBlobsResponse{Digests: ds, NextPageToken: next}, nil
}

// CollectGarbage implements metadatav1.ImageServiceServer.
func (s *Server) CollectGarbage(ctx context.Context, req *metadatav1.CollectGarbageRequest) (*metadatav1.CollectGarbageResponse, error) {
	grace := s.gc.Grace
	if d := req.GetGracePeriod(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, errdefs.InvalidArgument("grace_period %v is not a duration of zero or more", d)
		}
		grace = d.AsDuration()
	}
	return s.gc.Collect(ctx, grace, req.GetDryRun())
}

// CreateLease implements metadatav1.ImageServiceServer.
func (s *Server) CreateLease(ctx context.Context, req *metadatav1.CreateLeaseRequest) (*metadatav1.CreateLeaseResponse, error) {
	var expire time.Duration
	if d := req.GetExpireAfter(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, errdefs.InvalidArgument("expire_after: %v", err)
		}
		expire = d.AsDuration()
		if expire == 0 {
			return nil, errdefs.InvalidArgument("expire_after of lease %q is zero: leave it unset for the default", req.GetId())
		}
	}
	lease, err := s.images.CreateLease(ctx, req.GetId(), expire)
	if err != nil {
		return nil, err
	}
	return &metadatav1.CreateLeaseResponse{Lease: lease}, nil
}

// AddLeaseResource implements metadatav1.ImageServiceServer.
func (s *Server) AddLeaseResource(ctx context.Context, req *metadatav1.AddLeaseResourceRequest) (*metadatav1.AddLeaseResourceResponse, error) {
	referenced, err := s.images.AddLeaseBlobs(ctx, req.GetLeaseId(), req.GetDigests())
	if err != nil {
		return nil, err
	}
	return &metadatav1.AddLeaseResourceResponse{Referenced: referenced}, nil
}

// DeleteLease implements metadatav1.ImageServiceServer.
func (s *Server) DeleteLease(ctx context.Context, req *metadatav1.DeleteLeaseRequest) (*metadatav1.DeleteLeaseResponse, error) {
	if err := s.images.DeleteLease(ctx, req.GetLeaseId()); err != nil {
		return nil, err
	}
	return &metadatav1.DeleteLeaseResponse{}, nil
}

// GetDiskUsage implements metadatav1.ImageServiceServer.
func (s *Server) GetDiskUsage(ctx context.Context, _ *metadatav1.GetDiskUsageRequest) (*metadatav1.GetDiskUsageResponse, error) {
	return s.images.DiskUsage(ctx)
}

// RecordBuildEvent implements metadatav1.ImageServiceServer.
func (s *Server) RecordBuildEvent(ctx context.Context, req *metadatav1.RecordBuildEventRequest) (*metadatav1.RecordBuildEventResponse, error) {
	if err := s.images.RecordBuildEvent(ctx, req.GetEvent()); err != nil {
		return nil, err
	}
	return &metadatav1.RecordBuildEventResponse{}, nil
}

// WatchEvents implements metadatav1.ImageServiceServer.
func (s *Server) WatchEvents(req *metadatav1.WatchEventsRequest, stream metadatav1.ImageService_WatchEventsServer) error {
	var since time.Time
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return errdefs.InvalidArgument("since: %v", err)
		}
		since = req.GetSince().AsTime()
	}
	if err := s.images.ValidateEventFilters(req.GetFilters()); err != nil {
		return err
	}
	// The position is taken before the headers go out: a client that waits
	// for them sees every event after that, from any replica.
	cursor, err := s.images.EventCursor(stream.Context(), since)
	if err != nil {
		return err
	}
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	err = s.images.WatchEventsFrom(ctx, cursor, req.GetFilters(), func(ev *metadatav1.Event) error {
		return stream.Send(&metadatav1.WatchEventsResponse{Event: ev})
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// missingBlobs returns those of the digests the blob store does not hold.
func (s *Server) missingBlobs(ctx context.Context, digests []string) ([]string, error) {
	need := make([]digest.Digest, 0, len(digests))
	for _, d := range digests {
		if pd, err := digest.Parse(d); err == nil {
			need = append(need, pd)
		}
	}
	found, err := s.blobs.Exists(ctx, need)
	if err != nil {
		return nil, errdefs.Unavailable("checking blobs with the blob store: %v", err)
	}
	var missing []string
	for _, d := range need {
		if _, ok := found[d]; !ok {
			missing = append(missing, d.String())
		}
	}
	return missing, nil
}

// PutManifest implements metadatav1.ImageServiceServer.
func (s *Server) PutManifest(ctx context.Context, req *metadatav1.PutManifestRequest) (*metadatav1.PutManifestResponse, error) {
	checked := s.now()
	need := image.ManifestBlobs(req.GetManifest())
	if req.GetImage() != nil {
		for _, d := range neededBlobs(req.GetImage()) {
			need = append(need, d.String())
		}
	}
	missing, err := s.missingBlobs(ctx, need)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, errdefs.FailedPrecondition("manifest %s: the blob store does not hold %s", req.GetManifest().GetDigest(), strings.Join(missing, ", ")).
			WithReason("BLOBS_MISSING").WithDetail("missing", strings.Join(missing, ","))
	}
	m, err := s.images.PutManifest(ctx, req.GetRepository(), req.GetManifest(), image.ManifestOptions{
		Tags: req.GetTags(), Image: req.GetImage(), BlobsCheckedAt: checked,
	})
	if err != nil {
		return nil, err
	}
	return &metadatav1.PutManifestResponse{Manifest: m}, nil
}

// GetManifest implements metadatav1.ImageServiceServer.
func (s *Server) GetManifest(ctx context.Context, req *metadatav1.GetManifestRequest) (*metadatav1.GetManifestResponse, error) {
	m, err := s.images.GetManifest(ctx, req.GetRepository(), req.GetReference())
	if err != nil {
		return nil, err
	}
	return &metadatav1.GetManifestResponse{Manifest: m}, nil
}

// DeleteManifest implements metadatav1.ImageServiceServer.
func (s *Server) DeleteManifest(ctx context.Context, req *metadatav1.DeleteManifestRequest) (*metadatav1.DeleteManifestResponse, error) {
	untagged, err := s.images.DeleteManifest(ctx, req.GetRepository(), req.GetReference())
	if err != nil {
		return nil, err
	}
	return &metadatav1.DeleteManifestResponse{Untagged: untagged}, nil
}

// ListTags implements metadatav1.ImageServiceServer.
func (s *Server) ListTags(ctx context.Context, req *metadatav1.ListTagsRequest) (*metadatav1.ListTagsResponse, error) {
	tags, more, err := s.images.ListTags(ctx, req.GetRepository(), int(req.GetPageSize()), req.GetLast())
	if err != nil {
		return nil, err
	}
	return &metadatav1.ListTagsResponse{Tags: tags, More: more}, nil
}

// ListReferrers implements metadatav1.ImageServiceServer.
func (s *Server) ListReferrers(ctx context.Context, req *metadatav1.ListReferrersRequest) (*metadatav1.ListReferrersResponse, error) {
	refs, err := s.images.ListReferrers(ctx, req.GetRepository(), req.GetDigest(), req.GetArtifactType())
	if err != nil {
		return nil, err
	}
	return &metadatav1.ListReferrersResponse{Referrers: refs}, nil
}

// LinkBlob implements metadatav1.ImageServiceServer.
func (s *Server) LinkBlob(ctx context.Context, req *metadatav1.LinkBlobRequest) (*metadatav1.LinkBlobResponse, error) {
	missing, err := s.missingBlobs(ctx, []string{req.GetDigest()})
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, errdefs.FailedPrecondition("blob %s: the blob store does not hold it", req.GetDigest()).
			WithReason("BLOBS_MISSING").WithDetail("missing", req.GetDigest())
	}
	if err := s.images.LinkBlob(ctx, req.GetRepository(), req.GetDigest()); err != nil {
		return nil, err
	}
	return &metadatav1.LinkBlobResponse{}, nil
}

// UnlinkBlob implements metadatav1.ImageServiceServer.
func (s *Server) UnlinkBlob(ctx context.Context, req *metadatav1.UnlinkBlobRequest) (*metadatav1.UnlinkBlobResponse, error) {
	if err := s.images.UnlinkBlob(ctx, req.GetRepository(), req.GetDigest()); err != nil {
		return nil, err
	}
	return &metadatav1.UnlinkBlobResponse{}, nil
}

// HasBlob implements metadatav1.ImageServiceServer.
func (s *Server) HasBlob(ctx context.Context, req *metadatav1.HasBlobRequest) (*metadatav1.HasBlobResponse, error) {
	ok, err := s.images.HasBlob(ctx, req.GetRepository(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	return &metadatav1.HasBlobResponse{Found: ok}, nil
}

// Package image holds Strata's image metadata: the Store that the metadata
// service serves, its contract, and the Docker semantics every backend shares
// (reference resolution, `docker rmi` rules, prune, history rows, inspect,
// list filters). Backends (SQLite, PostgreSQL) only store rows: they
// implement Backend, and New turns one into a Store.
//
// The values are the API's protobuf messages (metadatav1.Image, …): they are
// the records, and a parallel set of structs would only be copied field for
// field at every boundary.
package image

import (
	"context"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// Store keeps images, their references, the build cache and the event log.
//
// Error contract (lib/errdefs kinds):
//   - ErrInvalidArgument: a malformed reference, filter, page token, config,
//     manifest or cache key; messages name the input.
//   - ErrNotFound: an unknown image or tag ("No such image: nginx:latest").
//   - ErrFailedPrecondition: a Docker conflict (deleting an image a child or
//     several repositories still need, a missing parent).
//   - ErrUnavailable: the database is unreachable; safe to retry.
//
// Every method is atomic: a failed call changes nothing.
type Store interface {
	// PutImage records an image (idempotent on its ID, the config digest)
	// and points the given tags at it in the same transaction. It derives
	// created, history, labels, OS and architecture from the config bytes.
	PutImage(ctx context.Context, img *metadatav1.Image, opts PutOptions) (*metadatav1.Image, error)
	// GetImage resolves a reference, an image ID or a unique ID prefix.
	GetImage(ctx context.Context, ref string) (*metadatav1.Image, error)
	// InspectImage returns `docker image inspect`'s fields and Docker's JSON.
	InspectImage(ctx context.Context, ref string) (*metadatav1.ImageInspect, []byte, error)
	// ListImages returns one page of summaries, newest first.
	ListImages(ctx context.Context, opts ListOptions) ([]*metadatav1.ImageSummary, string, error)
	// ImageHistory returns `docker image history`'s rows, newest first.
	ImageHistory(ctx context.Context, ref string) ([]*metadatav1.HistoryRow, error)
	// TagImage points target (a tag; "nginx" is "nginx:latest") at the image
	// source names, moving it atomically. It returns the image ID and the tag
	// as Docker shows it.
	TagImage(ctx context.Context, source, target string) (id, tag string, err error)
	// UntagImage removes one tag or repository digest and returns the ID of
	// the image it named; the image stays.
	UntagImage(ctx context.Context, ref string) (string, error)
	// DeleteImage removes an image with `docker rmi` semantics.
	DeleteImage(ctx context.Context, ref string, opts DeleteOptions) ([]*metadatav1.DeletedItem, error)
	// PruneImages removes dangling (or, with all, unused) images, as
	// `docker image prune`, returning what went and the bytes reclaimed.
	PruneImages(ctx context.Context, all bool, filters []*metadatav1.Filter) ([]*metadatav1.DeletedItem, int64, error)

	// PutCacheRecord stores a build-step cache record and returns the
	// key's record: this one, unless the key has a record of another image
	// that exists, which stays (the first writer wins, so that two builds
	// of one Dockerfile at once leave one consistent chain of records),
	// or its image is replaces (a record its writer found wrong). The image
	// must exist.
	PutCacheRecord(ctx context.Context, rec *metadatav1.CacheRecord, replaces string) (*metadatav1.CacheRecord, error)
	// LookupCacheRecords returns the records of the keys whose image still
	// exists, marking them used.
	LookupCacheRecords(ctx context.Context, keys []string) ([]*metadatav1.CacheRecord, error)
	// ListCacheRecords pages through the records, most recently used first.
	ListCacheRecords(ctx context.Context, pageSize int, pageToken string) ([]*metadatav1.CacheRecord, string, error)
	// PruneCacheRecords removes the records not used for unusedFor (all of
	// them when zero) and returns their keys.
	PruneCacheRecords(ctx context.Context, unusedFor time.Duration) ([]string, error)

	// ReferencedBlobs pages through the digests that any image needs
	// (manifests, configs, layers), in digest order.
	ReferencedBlobs(ctx context.Context, pageSize int, pageToken string) ([]string, string, error)
	// IsReferenced reports which of the digests some image needs.
	IsReferenced(ctx context.Context, digests []string) (map[string]bool, error)
	// CreateLease starts a lease that keeps the blobs added to it from
	// garbage collection until it is deleted or expires (after expireAfter;
	// DefaultLeaseExpiry when zero). An empty id gets a random one;
	// ErrAlreadyExists when id is taken.
	CreateLease(ctx context.Context, id string, expireAfter time.Duration) (*metadatav1.Lease, error)
	// AddLeaseBlobs adds blobs to a lease: ErrNotFound when the lease does
	// not exist or expired, ErrAborted while garbage collection deletes one
	// of them. It returns those of the digests that an image references,
	// which are therefore stored (see AddLeaseBlobs of Service).
	AddLeaseBlobs(ctx context.Context, id string, digests []string) (referenced []string, err error)
	// DeleteLease ends a lease, if it exists.
	DeleteLease(ctx context.Context, id string) error

	// DiskUsage reports what `docker system df` reports.
	DiskUsage(ctx context.Context) (*metadatav1.GetDiskUsageResponse, error)

	// WatchEvents calls fn with every event from since (zero: only new ones)
	// that matches the filters, in order, until ctx ends or fn fails. Events
	// of every replica sharing the database arrive.
	WatchEvents(ctx context.Context, since time.Time, filters []*metadatav1.Filter, fn func(*metadatav1.Event) error) error

	// PutManifest records a manifest or index pushed to a repository (a
	// registry's name, "team/app") and points the tags at it, recording
	// opts.Image too when set. Every index entry must be in the repository
	// (ErrFailedPrecondition otherwise); content that does not match the
	// digest is ErrInvalidArgument (reason DIGEST_INVALID).
	PutManifest(ctx context.Context, repo string, m *metadatav1.Manifest, opts ManifestOptions) (*metadatav1.Manifest, error)
	// GetManifest returns the manifest a repository holds under a tag or
	// digest, with its content (ErrNotFound, reason MANIFEST_UNKNOWN).
	GetManifest(ctx context.Context, repo, ref string) (*metadatav1.Manifest, error)
	// DeleteManifest removes a tag of a repository, or a digest and the
	// repository's tags that point at it, and returns what it removed as
	// Docker shows it. Images stay, dangling when that was their last
	// reference.
	DeleteManifest(ctx context.Context, repo, ref string) ([]string, error)
	// ListTags returns up to n of a repository's tags after last, in
	// lexical order, and whether more follow (ErrNotFound, reason
	// NAME_UNKNOWN, for a repository that holds nothing).
	ListTags(ctx context.Context, repo string, n int, last string) ([]string, bool, error)
	// ListReferrers returns the manifests of a repository whose subject is
	// the digest (of the artifact type, when not empty), in digest order.
	ListReferrers(ctx context.Context, repo, subject, artifactType string) ([]*metadatav1.Manifest, error)
	// LinkBlob records that a repository holds a blob pushed or mounted there.
	LinkBlob(ctx context.Context, repo, digest string) error
	// UnlinkBlob removes that link (ErrNotFound when there is none).
	UnlinkBlob(ctx context.Context, repo, digest string) error
	// HasBlob reports whether a repository holds a blob: linked, or needed
	// by an image or manifest one of its references points at.
	HasBlob(ctx context.Context, repo, digest string) (bool, error)
}

// PutOptions are the side effects of recording an image.
type PutOptions struct {
	// Tags to point at the image.
	Tags []string
	// RepoDigests, "name@digest", to record for the image.
	RepoDigests []string
	// Action says what recorded the image, for the event stream.
	Action metadatav1.EventAction
	// BlobsCheckedAt is when the caller saw the image's blobs in the blob
	// store; when set, PutImage fails with ErrAborted if garbage collection
	// deleted one of them since.
	BlobsCheckedAt time.Time
}

// ListOptions choose a page of images.
type ListOptions struct {
	Filters []*metadatav1.Filter
	// All includes intermediate images (untagged parents), as `docker images -a`.
	All       bool
	PageSize  int
	PageToken string
}

// DeleteOptions are the flags of `docker rmi`.
type DeleteOptions struct {
	// Force deletes an image that other repositories' tags or child images
	// still name.
	Force bool
	// NoPrune keeps the untagged parents the delete leaves behind.
	NoPrune bool
}

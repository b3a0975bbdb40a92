// Package image records images: it turns an image config and the layer blobs
// already in the blob store into the config and manifest blobs, and the
// metadata record (ImageService.PutImage) that makes the image visible.
//
// It is the one place where Strata decides what an image's bytes are, so
// that every way of making an image — build, import, load, pull — writes the
// same shapes: a Docker-compatible config (whose digest is the image ID) and
// an OCI manifest, unless the image came with a manifest of its own (pull,
// OCI load), which is kept verbatim so its digest stays the repository digest.
package image

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Media types of the documents and layers Strata writes and reads.
const (
	MediaTypeOCIManifest    = ocispec.MediaTypeImageManifest
	MediaTypeOCIIndex       = ocispec.MediaTypeImageIndex
	MediaTypeOCIConfig      = ocispec.MediaTypeImageConfig
	MediaTypeOCILayer       = ocispec.MediaTypeImageLayer
	MediaTypeOCILayerGzip   = ocispec.MediaTypeImageLayerGzip
	MediaTypeOCILayerZstd   = ocispec.MediaTypeImageLayerZstd
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	// MediaTypeDockerForeignLayer is a layer that registries do not hold
	// (Windows base layers); Strata has no use for one and refuses it.
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// Blobs is the part of the blob store the package needs.
type Blobs interface {
	// Put stores p under desc.Digest, checking that p matches desc (size and
	// digest; ErrInvalidArgument otherwise). Storing a blob that exists
	// succeeds without storing it again.
	Put(ctx context.Context, desc ocispec.Descriptor, p []byte) error
}

// Images is the part of the metadata service the package needs; the
// generated metadatav1.ImageServiceClient is one.
type Images interface {
	PutImage(ctx context.Context, in *metadatav1.PutImageRequest, opts ...grpc.CallOption) (*metadatav1.PutImageResponse, error)
	GetImage(ctx context.Context, in *metadatav1.GetImageRequest, opts ...grpc.CallOption) (*metadatav1.GetImageResponse, error)
	TagImage(ctx context.Context, in *metadatav1.TagImageRequest, opts ...grpc.CallOption) (*metadatav1.TagImageResponse, error)
	LookupCacheRecords(ctx context.Context, in *metadatav1.LookupCacheRecordsRequest, opts ...grpc.CallOption) (*metadatav1.LookupCacheRecordsResponse, error)
	PutCacheRecord(ctx context.Context, in *metadatav1.PutCacheRecordRequest, opts ...grpc.CallOption) (*metadatav1.PutCacheRecordResponse, error)
	PutManifest(ctx context.Context, in *metadatav1.PutManifestRequest, opts ...grpc.CallOption) (*metadatav1.PutManifestResponse, error)
}

// Layer is a layer blob held in the blob store.
type Layer struct {
	// Blob is the layer blob as stored: its media type, digest and size.
	Blob ocispec.Descriptor
	// DiffID is the digest of the uncompressed tar, as the config lists it.
	DiffID digest.Digest
	// DiffSize is the layer's size as Docker counts it: the bytes of its
	// regular files and symlink targets, hard links counted once.
	DiffSize int64
}

// New describes an image to record.
type New struct {
	// Config is the image config. ConfigBytes, when set, is used instead,
	// verbatim; Config is then ignored.
	Config      *Config
	ConfigBytes []byte
	// Layers are the layer blobs, bottom first, one per diff ID of the
	// config's rootfs, each already in the blob store.
	Layers []Layer
	// Manifest, when set, is kept verbatim as the image's manifest (a pulled
	// or loaded one), with ManifestMediaType its media type. It must name the
	// config and the layers above. When empty, an OCI manifest is written.
	Manifest          []byte
	ManifestMediaType string
	// Parent is the ID of the image this one was built on, for built images.
	Parent string
	// Tags to point at the image, Docker references such as "app:1.0".
	Tags []string
	// RepoDigests to record, "name@sha256:…".
	RepoDigests []string
	// Action says what made the image, for the event stream.
	Action metadatav1.EventAction
}

// Store records images in the blob store and the metadata service, and is
// the builder's one way to the metadata service: images, tags and the
// build cache's records.
type Store struct {
	blobs  Blobs
	images Images
}

// NewStore returns a Store over a blob store and the metadata service.
func NewStore(blobs Blobs, images Images) *Store {
	return &Store{blobs: blobs, images: images}
}

// Put records an image: it writes the config and manifest blobs, then the
// metadata record with its tags and repo digests in one PutImage call, so an
// image becomes visible whole or not at all. It is idempotent on the image
// ID. It fails with ErrInvalidArgument when the layers do not match the
// config's diff IDs or the given manifest, and passes on the metadata
// service's errors (FAILED_PRECONDITION for blobs missing from the store).
func (s *Store) Put(ctx context.Context, n New) (*metadatav1.Image, error) {
	rec, blobs, err := Assemble(n)
	if err != nil {
		return nil, err
	}
	for _, b := range blobs {
		if err := s.blobs.Put(ctx, b.Descriptor, b.Data); err != nil {
			return nil, fmt.Errorf("storing %s: %w", b.Descriptor.Digest, err)
		}
	}
	resp, err := s.images.PutImage(ctx, &metadatav1.PutImageRequest{
		Image:       rec,
		Tags:        n.Tags,
		RepoDigests: n.RepoDigests,
		Action:      n.Action,
	})
	if err != nil {
		return nil, err
	}
	return resp.GetImage(), nil
}

// PutManifest records a manifest or an index that is no image of its own
// (an index pulled whole, an attestation it lists) in a repository, as the
// registry records a pushed one: it writes the bytes to the blob store, then
// calls PutManifest, which points tags at it. An index's tags stand for its
// linux/amd64 image. The blobs it names, and the manifests an index lists,
// must already be in the blob store and the repository (FAILED_PRECONDITION
// otherwise). repo is a Docker repository, "docker.io/library/nginx".
func (s *Store) PutManifest(ctx context.Context, repo string, tags []string, mediaType string, content []byte) (*metadatav1.Manifest, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(content), Size: int64(len(content))}
	if err := s.blobs.Put(ctx, desc, content); err != nil {
		return nil, fmt.Errorf("storing %s: %w", desc.Digest, err)
	}
	resp, err := s.images.PutManifest(ctx, &metadatav1.PutManifestRequest{
		Repository: repo,
		Tags:       tags,
		Manifest:   &metadatav1.Manifest{Digest: desc.Digest.String(), MediaType: mediaType, Content: content},
	})
	if err != nil {
		return nil, err
	}
	return resp.GetManifest(), nil
}

// Tag points the reference target at the image source (an ID or a
// reference) and returns the tag as the metadata service records it
// ("app" becomes "app:latest"). NOT_FOUND when source is unknown.
func (s *Store) Tag(ctx context.Context, source, target string) (string, error) {
	resp, err := s.images.TagImage(ctx, &metadatav1.TagImageRequest{Source: source, Target: target})
	if err != nil {
		return "", err
	}
	return resp.GetTag(), nil
}

// CacheRecord is a build cache record: the image a build step with this
// key made.
type CacheRecord struct {
	Key     digest.Digest
	ImageID string
	// Description is the step's history text; Size its layer's diff size.
	Description string
	Size        int64
	// Replaces is the image of the key's record this one replaces, one
	// found not to be what the step makes; empty: the first writer wins.
	Replaces string
}

// CacheRecords returns, by key, the image IDs the cache records of keys
// name; a key without a record is absent from the map.
func (s *Store) CacheRecords(ctx context.Context, keys []digest.Digest) (map[digest.Digest]string, error) {
	hits := map[digest.Digest]string{}
	if len(keys) == 0 {
		return hits, nil
	}
	req := &metadatav1.LookupCacheRecordsRequest{Keys: make([]string, len(keys))}
	for i, k := range keys {
		req.Keys[i] = string(k)
	}
	resp, err := s.images.LookupCacheRecords(ctx, req)
	if err != nil {
		return nil, err
	}
	for _, r := range resp.GetRecords() {
		hits[digest.Digest(r.GetKey())] = r.GetImageId()
	}
	return hits, nil
}

// PutCacheRecord stores a cache record; its image must be recorded
// (FAILED_PRECONDITION otherwise). It returns the image ID of the key's
// record, another image's when another build recorded the key first (the
// first writer wins) unless that is r.Replaces.
func (s *Store) PutCacheRecord(ctx context.Context, r CacheRecord) (string, error) {
	resp, err := s.images.PutCacheRecord(ctx, &metadatav1.PutCacheRecordRequest{Record: &metadatav1.CacheRecord{
		Key: string(r.Key), ImageId: r.ImageID, Description: r.Description, Size: r.Size,
	}, ReplacesImageId: r.Replaces})
	if err != nil {
		return "", err
	}
	return resp.GetRecord().GetImageId(), nil
}

// Image is a recorded image with its config and manifest parsed.
type Image struct {
	Record   *metadatav1.Image
	Config   *Config
	Manifest *Manifest
}

// ID returns the image ID, the config digest.
func (i *Image) ID() digest.Digest { return digest.Digest(i.Record.GetId()) }

// Layers returns the image's layers, bottom first.
func (i *Image) Layers() []Layer {
	out := make([]Layer, 0, len(i.Record.GetLayers()))
	for _, l := range i.Record.GetLayers() {
		out = append(out, Layer{
			Blob: ocispec.Descriptor{
				MediaType: l.GetMediaType(),
				Digest:    digest.Digest(l.GetDigest()),
				Size:      l.GetSize(),
			},
			DiffID:   digest.Digest(l.GetDiffId()),
			DiffSize: l.GetDiffSize(),
		})
	}
	return out
}

// ConfigDescriptor returns the descriptor of the image's config blob.
func (i *Image) ConfigDescriptor() ocispec.Descriptor { return i.Manifest.Config }

// ManifestDescriptor returns the descriptor of the image's manifest blob.
func (i *Image) ManifestDescriptor() ocispec.Descriptor {
	m := i.Record.GetManifest()
	return ocispec.Descriptor{MediaType: m.GetMediaType(), Digest: digest.Digest(m.GetDigest()), Size: m.GetSize()}
}

// Get returns a recorded image by reference, image ID or ID prefix, with
// the metadata service's errors (NOT_FOUND, INVALID_ARGUMENT).
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	resp, err := s.images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: ref})
	if err != nil {
		return nil, err
	}
	return FromRecord(resp.GetImage())
}

// FromRecord parses the config and manifest of an image record.
func FromRecord(rec *metadatav1.Image) (*Image, error) {
	cfg, err := ParseConfig(rec.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", rec.GetId(), err)
	}
	m, err := ParseManifest(rec.GetManifestBytes(), rec.GetManifest().GetMediaType())
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", rec.GetId(), err)
	}
	return &Image{Record: rec, Config: cfg, Manifest: m}, nil
}

// Blob is a small blob's descriptor and bytes.
type Blob struct {
	Descriptor ocispec.Descriptor
	Data       []byte
}

// Assemble makes the record of an image without storing anything: the
// metadata record, and the config and manifest blobs it needs (config first).
// Put is Assemble followed by the writes; callers that must write the blobs
// elsewhere (an archive) use it directly.
func Assemble(n New) (*metadatav1.Image, []Blob, error) {
	configBytes := n.ConfigBytes
	if configBytes == nil {
		if n.Config == nil {
			return nil, nil, errdefs.InvalidArgument("image has no config")
		}
		var err error
		if configBytes, err = n.Config.Marshal(); err != nil {
			return nil, nil, err
		}
	}
	cfg, err := ParseConfig(configBytes)
	if err != nil {
		return nil, nil, err
	}
	if len(cfg.RootFS.DiffIDs) != len(n.Layers) {
		return nil, nil, errdefs.InvalidArgument("image config lists %d layers (diff IDs) but %d layer blobs were given",
			len(cfg.RootFS.DiffIDs), len(n.Layers))
	}
	for i, l := range n.Layers {
		if l.DiffID != cfg.RootFS.DiffIDs[i] {
			return nil, nil, errdefs.InvalidArgument("layer %d (%s) has diff ID %s, but the image config lists %s",
				i+1, l.Blob.Digest, l.DiffID, cfg.RootFS.DiffIDs[i])
		}
		if err := l.Blob.Digest.Validate(); err != nil {
			return nil, nil, errdefs.InvalidArgument("layer %d has digest %q: %v", i+1, l.Blob.Digest, err)
		}
	}
	configDesc := ocispec.Descriptor{
		MediaType: MediaTypeOCIConfig,
		Digest:    digest.FromBytes(configBytes),
		Size:      int64(len(configBytes)),
	}

	manifestBytes, manifestType := n.Manifest, n.ManifestMediaType
	if manifestBytes == nil {
		if manifestBytes, err = ociManifest(configDesc, n.Layers); err != nil {
			return nil, nil, err
		}
		manifestType = MediaTypeOCIManifest
	} else {
		m, err := ParseManifest(manifestBytes, manifestType)
		if err != nil {
			return nil, nil, err
		}
		if err := m.matches(configDesc.Digest, n.Layers); err != nil {
			return nil, nil, err
		}
		configDesc.MediaType = m.Config.MediaType
	}
	manifestDesc := ocispec.Descriptor{
		MediaType: manifestType,
		Digest:    digest.FromBytes(manifestBytes),
		Size:      int64(len(manifestBytes)),
	}

	rec := &metadatav1.Image{
		Id:            configDesc.Digest.String(),
		Manifest:      descriptorProto(manifestDesc),
		ManifestBytes: manifestBytes,
		Config:        configBytes,
		Created:       timestamp(cfg.Created),
		Parent:        n.Parent,
		Os:            cfg.OS,
		Architecture:  cfg.Architecture,
		Variant:       cfg.Variant,
	}
	if cfg.Config != nil && len(cfg.Config.Labels) > 0 {
		rec.Labels = cfg.Config.Labels
	}
	for _, l := range n.Layers {
		rec.Layers = append(rec.Layers, &metadatav1.Layer{
			Digest:    l.Blob.Digest.String(),
			DiffId:    l.DiffID.String(),
			Size:      l.Blob.Size,
			MediaType: l.Blob.MediaType,
			DiffSize:  l.DiffSize,
		})
		rec.Size += l.DiffSize
	}
	for _, h := range cfg.History {
		rec.History = append(rec.History, &metadatav1.HistoryEntry{
			Created:    timestamp(h.Created),
			CreatedBy:  h.CreatedBy,
			Author:     h.Author,
			Comment:    h.Comment,
			EmptyLayer: h.EmptyLayer,
		})
	}
	blobs := []Blob{
		{Descriptor: configDesc, Data: configBytes},
		{Descriptor: manifestDesc, Data: manifestBytes},
	}
	return rec, blobs, nil
}

// ociManifest writes the OCI manifest of a config and its layers.
func ociManifest(config ocispec.Descriptor, layers []Layer) ([]byte, error) {
	m := ocispec.Manifest{
		MediaType: MediaTypeOCIManifest,
		Config:    config,
		Layers:    make([]ocispec.Descriptor, 0, len(layers)),
	}
	m.SchemaVersion = 2
	for _, l := range layers {
		d := l.Blob
		if d.MediaType == "" {
			return nil, errdefs.InvalidArgument("layer %s has no media type", d.Digest)
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size})
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, errdefs.Internal("marshalling a manifest: %v", err)
	}
	return b, nil
}

func descriptorProto(d ocispec.Descriptor) *metadatav1.Descriptor {
	return &metadatav1.Descriptor{MediaType: d.MediaType, Digest: d.Digest.String(), Size: d.Size}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// MaxIndexManifests is the most manifests an index pulled whole may list:
// each costs a manifest, a config and layers, fetched one platform at a time.
const MaxIndexManifests = 64

// maxArtifactBlobSize bounds each blob of a manifest in an index that is
// no image (an attestation, an SBOM): such blobs are small documents.
const maxArtifactBlobSize = 64 << 20

// pullIndex pulls an index whole (`docker pull --all-platforms`): every
// manifest it lists with its blobs, each image recorded as a pull records
// one (with its own repository digest), then the index, verbatim, in the
// reference's repository as the registry records a pushed index, with the
// tag. The tag stands for the index's linux/amd64 image, as the metadata
// service decides for every index. Manifests that are no image
// (attestations) are stored and recorded in the repository as they are.
// Nothing is recorded until every blob of every platform is stored.
// The result names the image of platform, if the index has one.
func (s *Service) pullIndex(ctx context.Context, ref reference.Reference, puller *remote.Puller, fetcher *blobFetcher,
	idx *image.Index, indexBytes []byte, platform Platform, what string, progress Progress) (PullResult, error) {
	if len(idx.Manifests) > MaxIndexManifests {
		return PullResult{}, errdefs.ResourceExhausted("%s: the index lists %d manifests, over the limit of %d for --all-platforms",
			what, len(idx.Manifests), MaxIndexManifests).WithReason("INDEX_TOO_LARGE")
	}
	want, err := PickPlatform(idx, platform)
	if err != nil {
		want = ocispec.Descriptor{}
	}
	repo := fetcher.repo
	repoName := ref.Repository().String()
	res := PullResult{Reference: ref.Familiar(), ManifestDigest: digest.FromBytes(indexBytes)}
	// Every blob is fetched and checked before anything is recorded, so a
	// pull that fails on one platform records none.
	type pending struct {
		entry     ocispec.Descriptor
		image     *image.New // nil for a manifest that is no image
		manifest  []byte
		mediaType string
		what      string
	}
	var todo []pending
	for _, entry := range idx.Manifests {
		entryWhat := fmt.Sprintf("%s: manifest %s", what, entry.Digest)
		if image.IsIndexMediaType(entry.MediaType) {
			return PullResult{}, errdefs.InvalidArgument("%s is an index in an index, which --all-platforms does not pull", entryWhat).
				WithReason("NESTED_INDEX")
		}
		if entry.Size > image.MaxConfigSize {
			return PullResult{}, errdefs.ResourceExhausted("%s is %d bytes, over the %d-byte limit", entryWhat, entry.Size, image.MaxConfigSize)
		}
		b, mediaType, err := s.getManifest(ctx, puller, repo, entry, entryWhat)
		if err != nil {
			return PullResult{}, err
		}
		p := pending{entry: entry, manifest: b, mediaType: mediaType, what: entryWhat}
		if !isImage(b, mediaType) {
			if err := s.fetchArtifact(ctx, fetcher, b, mediaType, entryWhat); err != nil {
				return PullResult{}, err
			}
			todo = append(todo, p)
			continue
		}
		n, fetched, err := s.fetchImage(ctx, puller, fetcher, repo, b, mediaType, entryWhat, progress)
		if err != nil {
			return PullResult{}, err
		}
		res.BytesFetched += fetched
		n.RepoDigests = []string{repoName + "@" + entry.Digest.String()}
		n.Action = metadatav1.EventAction_EVENT_ACTION_PULL
		p.image = &n
		todo = append(todo, p)
	}
	for _, p := range todo {
		if p.image == nil {
			if _, err := s.images.PutManifest(ctx, repoName, nil, p.mediaType, p.manifest); err != nil {
				return PullResult{}, fmt.Errorf("%s: %w", p.what, err)
			}
			continue
		}
		rec, err := s.images.Put(ctx, *p.image)
		if err != nil {
			return PullResult{}, err
		}
		platform := ""
		if e := p.entry.Platform; e != nil {
			platform = Platform{OS: e.OS, Architecture: e.Architecture, Variant: e.Variant}.String()
		}
		id := digest.Digest(rec.GetId())
		res.Platforms = append(res.Platforms, PulledPlatform{Platform: platform, ImageID: id, ManifestDigest: p.entry.Digest})
		if p.entry.Digest == want.Digest && res.ImageID == "" {
			res.ImageID = id
		}
	}
	var tags []string
	if ref.Digest() == "" {
		tags = []string{ref.Tag()}
	}
	if _, err := s.images.PutManifest(ctx, repoName, tags, idx.MediaType, indexBytes); err != nil {
		return PullResult{}, fmt.Errorf("%s: recording the index: %w", what, err)
	}
	return res, nil
}

// isImage reports whether a manifest is an image Strata records: an image
// manifest with an image config and layers it can unpack. Anything else an
// index lists (attestations, SBOMs, signatures) is kept as it is.
func isImage(b []byte, mediaType string) bool {
	m, err := image.ParseManifest(b, mediaType)
	if err != nil {
		return false
	}
	return m.Config.MediaType == image.MediaTypeOCIConfig || m.Config.MediaType == image.MediaTypeDockerConfig
}

// fetchArtifact fetches the blobs of a manifest that is no image into the
// blob store, each bounded and checked against its digest, skipping those
// the store holds.
func (s *Service) fetchArtifact(ctx context.Context, fetcher *blobFetcher, b []byte, mediaType, what string) error {
	var doc struct {
		Config *ocispec.Descriptor  `json:"config"`
		Layers []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return errdefs.InvalidArgument("%s (%s): %v", what, mediaType, err)
	}
	var descs []ocispec.Descriptor
	if doc.Config != nil {
		descs = append(descs, *doc.Config)
	}
	descs = append(descs, doc.Layers...)
	want := make([]digest.Digest, 0, len(descs))
	for _, d := range descs {
		if err := d.Digest.Validate(); err != nil {
			return errdefs.InvalidArgument("%s: blob digest %q: %v", what, d.Digest, err)
		}
		if d.Size < 0 || d.Size > maxArtifactBlobSize {
			return errdefs.ResourceExhausted("%s: blob %s is %d bytes, over the %d-byte limit", what, d.Digest, d.Size, maxArtifactBlobSize)
		}
		want = append(want, d.Digest)
	}
	missing, err := s.blobs.Missing(ctx, want)
	if err != nil {
		return err
	}
	for _, d := range descs {
		if !slices.Contains(missing, d.Digest) {
			continue
		}
		blobWhat := fmt.Sprintf("%s: blob %s", what, d.Digest)
		err := s.withRetries(ctx, nil, d.Digest.String(), func() error {
			rc, err := fetcher.open(ctx, d.Digest)
			if err != nil {
				return registryError(err, blobWhat)
			}
			defer rc.Close()
			return s.storeBlob(ctx, registryReader{io.LimitReader(rc, d.Size+1), blobWhat}, d, blobWhat)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// storeBlob copies a blob of known size and digest into the blob store as
// it is; the store refuses it unless both match.
func (s *Service) storeBlob(ctx context.Context, r io.Reader, d ocispec.Descriptor, what string) error {
	w, err := s.blobs.Writer(ctx, d.MediaType)
	if err != nil {
		return err
	}
	defer w.Close()
	n, err := io.Copy(w, r)
	if err != nil {
		return err
	}
	if n != d.Size {
		return errdefs.InvalidArgument("%s has %d bytes, its descriptor says %d", what, n, d.Size).WithReason("SIZE_MISMATCH")
	}
	if err := w.Commit(ctx, n, d.Digest); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		if errdefs.IsInvalidArgument(err) {
			return errdefs.InvalidArgument("%s does not match its digest: %v", what, err).WithReason("DIGEST_MISMATCH")
		}
		return fmt.Errorf("storing %s: %w", what, err)
	}
	return nil
}

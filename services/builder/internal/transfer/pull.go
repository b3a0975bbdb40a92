package transfer

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// PullOptions are the options of `docker pull`.
type PullOptions struct {
	// Platform picks the entry of an index; linux/amd64 when empty.
	Platform string
	Auth     Auth
	// Insecure uses plain HTTP (always so for localhost and loopback).
	Insecure bool
	// AllPlatforms keeps an index whole: every image it lists is recorded,
	// and the index itself in the reference's repository (see pullIndex).
	// Platform then picks the image PullResult names.
	AllPlatforms bool
}

// PullResult is what a pull recorded.
type PullResult struct {
	ImageID        digest.Digest
	Reference      string // as Docker shows it
	ManifestDigest digest.Digest
	BytesFetched   int64 // layer bytes that came from the registry
	// Platforms are the images of an index pulled whole, in its order.
	Platforms []PulledPlatform
}

// PulledPlatform is one image of an index pulled whole.
type PulledPlatform struct {
	Platform       string
	ImageID        digest.Digest
	ManifestDigest digest.Digest
}

// layerJobs is how many layers move at once, as Docker's default.
const layerJobs = 3

// Pull fetches an image from a registry into the blob store, skipping the
// blobs it holds already, and records it with its tag and repository digest.
// Every blob is checked against its digest, and every layer against the
// diff ID its config lists, before the image is recorded.
func (s *Service) Pull(ctx context.Context, refStr string, opts PullOptions, progress Progress) (PullResult, error) {
	ref, err := reference.ParseDefaultTag(refStr)
	if err != nil {
		return PullResult{}, err
	}
	platform, err := ParsePlatform(opts.Platform)
	if err != nil {
		return PullResult{}, err
	}
	rref, err := registryRef(ref, opts.Insecure)
	if err != nil {
		return PullResult{}, err
	}
	puller, err := remote.NewPuller(s.remoteOptions(ctx, opts.Auth)...)
	if err != nil {
		return PullResult{}, err
	}
	what := "pulling " + ref.Familiar()
	top, err := puller.Get(ctx, rref)
	if err != nil {
		return PullResult{}, registryError(err, what)
	}
	desc, manifestBytes := top.Descriptor, top.Manifest
	if digest.FromBytes(manifestBytes) != digest.Digest(desc.Digest.String()) {
		return PullResult{}, errdefs.InvalidArgument("%s: the manifest does not match its digest %s", what, desc.Digest).WithReason("DIGEST_MISMATCH")
	}
	repoDigest := digest.Digest(desc.Digest.String())
	mediaType := string(desc.MediaType)
	repo := rref.Context()
	fetcher, err := s.newBlobFetcher(ctx, repo, opts.Auth)
	if err != nil {
		return PullResult{}, registryError(err, what)
	}
	if image.IsIndexMediaType(mediaType) {
		idx, err := image.ParseIndex(manifestBytes, mediaType)
		if err != nil {
			return PullResult{}, fmt.Errorf("%s: %w", what, err)
		}
		if opts.AllPlatforms {
			return s.pullIndex(ctx, ref, puller, fetcher, idx, manifestBytes, platform, what, progress)
		}
		child, err := PickPlatform(idx, platform)
		if err != nil {
			return PullResult{}, fmt.Errorf("%s: %w", what, err)
		}
		if manifestBytes, mediaType, err = s.getManifest(ctx, puller, repo, child, what+": the "+platform.String()+" manifest"); err != nil {
			return PullResult{}, err
		}
	}
	n, fetched, err := s.fetchImage(ctx, puller, fetcher, repo, manifestBytes, mediaType, what, progress)
	if err != nil {
		return PullResult{}, err
	}
	n.RepoDigests = []string{ref.Repository().String() + "@" + repoDigest.String()}
	n.Action = metadatav1.EventAction_EVENT_ACTION_PULL
	if ref.Digest() == "" {
		n.Tags = []string{ref.String()}
	}
	rec, err := s.images.Put(ctx, n)
	if err != nil {
		return PullResult{}, err
	}
	return PullResult{
		ImageID:        digest.Digest(rec.GetId()),
		Reference:      ref.Familiar(),
		ManifestDigest: repoDigest,
		BytesFetched:   fetched,
	}, nil
}

// getManifest fetches the manifest an index entry names and checks it
// against the entry's digest; it returns its bytes and media type.
func (s *Service) getManifest(ctx context.Context, puller *remote.Puller, repo name.Repository, entry ocispec.Descriptor, what string) ([]byte, string, error) {
	d, err := puller.Get(ctx, repo.Digest(entry.Digest.String()))
	if err != nil {
		return nil, "", registryError(err, what)
	}
	if digest.FromBytes(d.Manifest) != entry.Digest {
		return nil, "", errdefs.InvalidArgument("%s does not match its digest %s", what, entry.Digest).WithReason("DIGEST_MISMATCH")
	}
	mediaType := string(d.MediaType)
	if entry.MediaType != "" && entry.MediaType != mediaType {
		mediaType = entry.MediaType
	}
	return d.Manifest, mediaType, nil
}

// fetchImage fetches the config and the layers of an image manifest into
// the blob store, checking each, and returns the image to record (without
// its references) and the layer bytes that came from the registry.
func (s *Service) fetchImage(ctx context.Context, puller *remote.Puller, fetcher *blobFetcher, repo name.Repository,
	manifestBytes []byte, mediaType, what string, progress Progress) (image.New, int64, error) {
	m, err := image.ParseManifest(manifestBytes, mediaType)
	if err != nil {
		return image.New{}, 0, fmt.Errorf("%s: %w", what, err)
	}
	configBytes, err := s.fetchConfig(ctx, puller, repo, m.Config, what)
	if err != nil {
		return image.New{}, 0, err
	}
	cfg, err := image.ParseConfig(configBytes)
	if err != nil {
		return image.New{}, 0, fmt.Errorf("%s: %w", what, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return image.New{}, 0, errdefs.InvalidArgument("%s: the manifest lists %d layers, the config %d diff IDs", what, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	layers, fetched, err := s.pullLayers(ctx, fetcher, m.Layers, cfg.RootFS.DiffIDs, configBytes, what, progress)
	if err != nil {
		return image.New{}, 0, err
	}
	return image.New{
		ConfigBytes:       configBytes,
		Layers:            layers,
		Manifest:          manifestBytes,
		ManifestMediaType: m.MediaType,
	}, fetched, nil
}

// PickPlatform returns the entry of an index for the platform, or
// NOT_FOUND listing the platforms the index has.
func PickPlatform(idx *image.Index, p Platform) (ocispec.Descriptor, error) {
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		mp := Platform{OS: m.Platform.OS, Architecture: m.Platform.Architecture, Variant: m.Platform.Variant}
		if mp.OS == p.OS && mp.Architecture == p.Architecture && (p.Variant == "" || p.Variant == mp.Variant) {
			return m, nil
		}
		have = append(have, mp.String())
	}
	return ocispec.Descriptor{}, errdefs.NotFound("no image for %s in the index; it has %s", p, orNone(have)).WithReason("NO_MATCHING_PLATFORM")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// fetchConfig reads the config blob (bounded) and stores it.
func (s *Service) fetchConfig(ctx context.Context, puller *remote.Puller, repo name.Repository, desc ocispec.Descriptor, what string) ([]byte, error) {
	if desc.Size > image.MaxConfigSize {
		return nil, errdefs.ResourceExhausted("%s: the config is %d bytes, over the %d-byte limit", what, desc.Size, image.MaxConfigSize)
	}
	var b []byte
	err := s.withRetries(ctx, nil, desc.Digest.String(), func() error {
		l, err := puller.Layer(ctx, repo.Digest(desc.Digest.String()))
		if err != nil {
			return registryError(err, what)
		}
		rc, err := l.Compressed()
		if err != nil {
			return registryError(err, what+": fetching the config")
		}
		defer rc.Close()
		b, err = image.ReadJSON(rc, "the config")
		return registryError(err, what+": fetching the config")
	})
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(b); got != desc.Digest {
		return nil, errdefs.InvalidArgument("%s: the config does not match its digest: got %s, want %s", what, got, desc.Digest).WithReason("DIGEST_MISMATCH")
	}
	return b, nil
}

// pullLayers fetches the layers the blob store lacks, layerJobs at a time,
// and returns every layer with its diff ID and diff size.
func (s *Service) pullLayers(ctx context.Context, fetcher *blobFetcher, descs []ocispec.Descriptor,
	diffIDs []digest.Digest, configBytes []byte, what string, progress Progress) ([]image.Layer, int64, error) {
	want := make([]digest.Digest, len(descs))
	for i, d := range descs {
		want[i] = d.Digest
	}
	missing, err := s.blobs.Missing(ctx, want)
	if err != nil {
		return nil, 0, err
	}
	known := s.knownLayers(ctx, digest.FromBytes(configBytes))

	layers := make([]image.Layer, len(descs))
	var mu sync.Mutex
	var fetched int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerJobs)
	for i, d := range descs {
		id := d.Digest.String()
		if slices.Contains(missing, d.Digest) {
			progress.Send(Update{ID: id, Action: ActionWaiting, Total: d.Size})
		}
		g.Go(func() error {
			layerWhat := fmt.Sprintf("%s: layer %s", what, d.Digest)
			if !slices.Contains(missing, d.Digest) {
				l, ok := known[d.Digest]
				if !ok || l.DiffID != diffIDs[i] {
					var err error
					if l, err = s.scanStored(gctx, d, layerWhat); err != nil {
						return err
					}
				}
				if l.DiffID != diffIDs[i] {
					return errdefs.InvalidArgument("%s does not match the diff ID its config lists: got %s, want %s", layerWhat, l.DiffID, diffIDs[i]).
						WithReason("DIFF_ID_MISMATCH")
				}
				l.Blob = d
				layers[i] = l
				progress.Send(Update{ID: id, Action: ActionExists, Current: d.Size, Total: d.Size})
				return nil
			}
			return s.withRetries(gctx, progress, id, func() error {
				rc, err := fetcher.open(gctx, d.Digest)
				if err != nil {
					return registryError(err, layerWhat)
				}
				defer rc.Close()
				in := NewProgressReader(registryReader{rc, layerWhat}, progress, id, ActionDownloading, d.Size)
				l, err := s.StoreLayer(gctx, in, d, diffIDs[i], layerWhat)
				if err != nil {
					return err
				}
				layers[i] = l
				mu.Lock()
				fetched += in.Count()
				mu.Unlock()
				progress.Send(Update{ID: id, Action: ActionDone, Current: d.Size, Total: d.Size})
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	return layers, fetched, nil
}

// knownLayers returns the layers of an image already recorded with this
// config, so a repeated pull needs neither the registry's bytes nor a
// re-read of the blobs to know their diff sizes.
func (s *Service) knownLayers(ctx context.Context, id digest.Digest) map[digest.Digest]image.Layer {
	out := map[digest.Digest]image.Layer{}
	img, err := s.images.Get(ctx, id.String())
	if err != nil {
		return out
	}
	for _, l := range img.Layers() {
		out[l.Blob.Digest] = l
	}
	return out
}

// registryReader classifies the errors of a blob body read from a registry.
type registryReader struct {
	r    io.Reader
	what string
}

func (r registryReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		// A broken connection is worth a retry.
		err = registryError(err, r.what)
	}
	return n, err
}

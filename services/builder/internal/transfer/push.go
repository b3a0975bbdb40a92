package transfer

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// PushOptions are the options of `docker push`.
type PushOptions struct {
	Auth Auth
	// Insecure uses plain HTTP (always so for localhost and loopback).
	Insecure bool
}

// PushResult is what a push sent.
type PushResult struct {
	Reference      string
	ManifestDigest digest.Digest
	ManifestSize   int64
	BytesSent      int64 // layer and config bytes uploaded
}

// Push sends a local image to a registry under its tag: the blobs the
// registry lacks (checked with HEAD; mounted from another repository of the
// same registry when the image came from one), then the manifest, verbatim,
// so its digest is the one Strata holds. It records the repository digest.
func (s *Service) Push(ctx context.Context, refStr string, opts PushOptions, progress Progress) (PushResult, error) {
	ref, err := reference.ParseDefaultTag(refStr)
	if err != nil {
		return PushResult{}, err
	}
	if ref.Digest() != "" {
		return PushResult{}, errdefs.InvalidArgument("cannot push %s: push a tag, not a digest", ref.Familiar())
	}
	img, err := s.images.Get(ctx, ref.String())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return PushResult{}, errdefs.NotFound("an image does not exist locally with the tag: %s", ref.FamiliarName()).WithReason("IMAGE_NOT_FOUND")
		}
		return PushResult{}, err
	}
	rref, err := registryRef(ref, opts.Insecure)
	if err != nil {
		return PushResult{}, err
	}
	repo := rref.Context()
	ropts := s.remoteOptions(ctx, opts.Auth)
	pusher, err := remote.NewPusher(ropts...)
	if err != nil {
		return PushResult{}, err
	}
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return PushResult{}, err
	}
	what := "pushing " + ref.Familiar()
	mountFrom := mountSource(img, repo)

	var blobs []ocispec.Descriptor
	for _, l := range img.Layers() {
		blobs = append(blobs, l.Blob)
	}
	var sent atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerJobs)
	// The config goes too, without progress: Docker shows layers only.
	g.Go(func() error {
		n, err := s.pushBlob(gctx, puller, pusher, repo, img.ConfigDescriptor(), nil, what, nil)
		sent.Add(n)
		return err
	})
	for _, d := range blobs {
		progress.Send(Update{ID: d.Digest.String(), Action: ActionWaiting, Total: d.Size})
		g.Go(func() error {
			n, err := s.pushBlob(gctx, puller, pusher, repo, d, mountFrom, what, progress)
			sent.Add(n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return PushResult{}, err
	}

	mdesc := img.ManifestDescriptor()
	m := rawManifest{b: img.Record.GetManifestBytes(), mediaType: mdesc.MediaType}
	if err := pusher.Put(ctx, rref, m); err != nil {
		return PushResult{}, registryError(err, what+": putting the manifest")
	}

	// Record where the image now is, as Docker adds a RepoDigest on push.
	repoDigest := ref.Repository().String() + "@" + mdesc.Digest.String()
	if _, err := s.images.Put(ctx, image.New{
		ConfigBytes:       img.Record.GetConfig(),
		Layers:            img.Layers(),
		Manifest:          img.Record.GetManifestBytes(),
		ManifestMediaType: mdesc.MediaType,
		Parent:            img.Record.GetParent(),
		RepoDigests:       []string{repoDigest},
		Action:            metadatav1.EventAction_EVENT_ACTION_PUSH,
	}); err != nil {
		return PushResult{}, fmt.Errorf("%s: recording the repository digest: %w", what, err)
	}
	return PushResult{
		Reference:      ref.Familiar(),
		ManifestDigest: mdesc.Digest,
		ManifestSize:   mdesc.Size,
		BytesSent:      sent.Load(),
	}, nil
}

// pushBlob uploads one blob unless the registry has it, returning the bytes
// sent.
func (s *Service) pushBlob(ctx context.Context, puller *remote.Puller, pusher *remote.Pusher, repo name.Repository,
	d ocispec.Descriptor, mountFrom name.Reference, what string, progress Progress) (int64, error) {
	id := d.Digest.String()
	blobWhat := fmt.Sprintf("%s: blob %s", what, d.Digest)
	var exists bool
	err := s.withRetries(ctx, progress, id, func() error {
		rl, err := puller.Layer(ctx, repo.Digest(id))
		if err != nil {
			return registryError(err, blobWhat)
		}
		ex, ok := rl.(interface{ Exists() (bool, error) })
		if !ok {
			return nil
		}
		exists, err = ex.Exists()
		return registryError(err, blobWhat+": checking whether the registry has it")
	})
	if err != nil {
		return 0, err
	}
	if exists {
		progress.Send(Update{ID: id, Action: ActionExists, Current: d.Size, Total: d.Size})
		return 0, nil
	}
	sl := &storedLayer{ctx: ctx, s: s, desc: d, progress: progress}
	var l v1.Layer = sl
	if mountFrom != nil {
		l = &remote.MountableLayer{Layer: sl, Reference: mountFrom}
	}
	// go-containerregistry retries the upload (from its start) on transient
	// failures, opening the blob again each time.
	if err := pusher.Upload(ctx, repo, l); err != nil {
		return sl.sent(), registryError(err, blobWhat)
	}
	if sl.opens.Load() == 0 {
		progress.Send(Update{ID: id, Action: ActionMounted, Current: d.Size, Total: d.Size})
		return 0, nil
	}
	progress.Send(Update{ID: id, Action: ActionDone, Current: d.Size, Total: d.Size})
	return sl.sent(), nil
}

// mountSource returns a reference in the same registry that the image was
// pulled from or pushed to, other than repo, for cross-repository mounts.
func mountSource(img *image.Image, repo name.Repository) name.Reference {
	for _, rd := range img.Record.GetRepoDigests() {
		r, err := name.ParseReference(rd)
		if err != nil {
			continue
		}
		if r.Context().RegistryStr() == repo.RegistryStr() && r.Context().RepositoryStr() != repo.RepositoryStr() {
			return r
		}
	}
	return nil
}

// storedLayer is a blob of the blob store as go-containerregistry's layer.
type storedLayer struct {
	ctx      context.Context // the push's; Compressed has no context parameter
	s        *Service
	desc     ocispec.Descriptor
	progress Progress
	opens    atomic.Int32
	last     atomic.Pointer[ProgressReader]
}

func (l *storedLayer) sent() int64 {
	if pr := l.last.Load(); pr != nil {
		return pr.Count()
	}
	return 0
}

func (l *storedLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.desc.Digest.String()) }
func (l *storedLayer) DiffID() (v1.Hash, error) {
	return v1.Hash{}, errdefs.Unimplemented("the diff ID of a stored blob is not needed to push it")
}
func (l *storedLayer) Size() (int64, error) { return l.desc.Size, nil }
func (l *storedLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.desc.MediaType), nil
}
func (l *storedLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errdefs.Unimplemented("pushing sends stored blobs as they are")
}

func (l *storedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.s.blobs.Open(l.ctx, l.desc.Digest)
	if err != nil {
		return nil, err
	}
	l.opens.Add(1)
	pr := NewProgressReader(rc, l.progress, l.desc.Digest.String(), ActionUploading, l.desc.Size)
	l.last.Store(pr)
	return struct {
		io.Reader
		io.Closer
	}{pr, rc}, nil
}

// rawManifest is a manifest to put verbatim.
type rawManifest struct {
	b         []byte
	mediaType string
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.b, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.MediaType(m.mediaType), nil }

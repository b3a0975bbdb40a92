package registry

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
)

// Media types of image manifests, configs and layers a pushed image may
// have; any other manifest is served as pushed but is no image of Strata's.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	maxConfigSize           = 4 << 20
)

var layerMediaTypes = map[string]bool{
	ocispec.MediaTypeImageLayer:                         true,
	ocispec.MediaTypeImageLayerGzip:                     true,
	ocispec.MediaTypeImageLayerZstd:                     true,
	"application/vnd.docker.image.rootfs.diff.tar.gzip": true,
	"application/vnd.docker.image.rootfs.diff.tar":      true,
}

// layerJobs is how many layers of one manifest are read at once.
const layerJobs = 3

// imageOf returns the image record of a pushed manifest when it is a
// runnable image: an image manifest (sha256) whose config is an image
// config and whose layers are the layer tarballs the config's diff IDs
// name. Anything else (artifacts, indexes, images whose layers are not
// what their config says) is no image: nil, without error. Errors are
// failures to read the blob store.
func (g *Registry) imageOf(ctx context.Context, m *metadatav1.Manifest) (*metadatav1.Image, error) {
	if m.GetMediaType() != ocispec.MediaTypeImageManifest && m.GetMediaType() != mediaTypeDockerManifest {
		return nil, nil
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(m.GetContent(), &man); err != nil {
		return nil, nil // the metadata service refuses it, naming why
	}
	if man.Config.MediaType != ocispec.MediaTypeImageConfig && man.Config.MediaType != mediaTypeDockerConfig ||
		man.Config.Digest.Algorithm() != digest.SHA256 || man.Config.Size > maxConfigSize || digest.Digest(m.GetDigest()).Algorithm() != digest.SHA256 {
		return nil, nil
	}
	for _, l := range man.Layers {
		if !layerMediaTypes[l.MediaType] || l.Digest.Algorithm() != digest.SHA256 {
			return nil, nil
		}
	}
	config, err := g.readConfig(ctx, man.Config)
	if err != nil || config == nil {
		return nil, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(config, &cfg); err != nil || len(cfg.RootFS.DiffIDs) != len(man.Layers) {
		return nil, nil
	}
	img := &metadatav1.Image{
		Manifest:      &metadatav1.Descriptor{MediaType: m.GetMediaType(), Digest: m.GetDigest(), Size: int64(len(m.GetContent()))},
		ManifestBytes: m.GetContent(),
		Config:        config,
		Layers:        make([]*metadatav1.Layer, len(man.Layers)),
	}
	known := g.knownLayers(ctx, man.Config.Digest)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(layerJobs)
	matches := make([]bool, len(man.Layers))
	for i, l := range man.Layers {
		eg.Go(func() error {
			layer, ok := known[l.Digest.String()]
			if !ok {
				var err error
				if layer, err = g.scanLayer(ectx, l); err != nil || layer == nil {
					return err
				}
			}
			layer.MediaType, layer.Size = l.MediaType, l.Size
			img.Layers[i] = layer
			matches[i] = layer.GetDiffId() == cfg.RootFS.DiffIDs[i].String()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	for i, ok := range matches {
		if !ok {
			g.log.InfoContext(ctx, "pushed manifest is no image: a layer does not match its diff ID", "manifest", m.GetDigest(), "layer", i)
			return nil, nil
		}
	}
	return img, nil
}

// readConfig reads an image config from the blob store; nil when it is not
// there (the metadata service then refuses the manifest).
func (g *Registry) readConfig(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	rc, err := g.blobs.Open(ctx, desc.Digest, 0, 0)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxConfigSize+1))
	if err != nil || len(b) > maxConfigSize || digest.FromBytes(b) != desc.Digest {
		return nil, err
	}
	return b, nil
}

// knownLayers returns the layers of the image already recorded with this
// config, so that pushing an image Strata holds reads none of its layers.
func (g *Registry) knownLayers(ctx context.Context, config digest.Digest) map[string]*metadatav1.Layer {
	out := map[string]*metadatav1.Layer{}
	resp, err := g.meta.GetImage(ctx, &metadatav1.GetImageRequest{Reference: config.String()})
	if err != nil {
		return out
	}
	for _, l := range resp.GetImage().GetLayers() {
		out[l.GetDigest()] = &metadatav1.Layer{Digest: l.GetDigest(), DiffId: l.GetDiffId(), DiffSize: l.GetDiffSize()}
	}
	return out
}

// scanLayer reads a stored layer through the bounded decompressor and
// returns its diff ID and its size as Docker counts it (regular files and
// symlink targets); nil when it is no tarball or not stored.
func (g *Registry) scanLayer(ctx context.Context, desc ocispec.Descriptor) (*metadatav1.Layer, error) {
	rc, err := g.blobs.Open(ctx, desc.Digest, 0, 0)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	what := fmt.Sprintf("layer %s", desc.Digest)
	d, err := compression.NewReader(rc, g.limits, what)
	if err != nil {
		return nil, storeError(err)
	}
	defer d.Close()
	h := digest.SHA256.Digester()
	tee := io.TeeReader(d, h.Hash())
	tr := tar.NewReader(tee)
	var size int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, storeError(err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			size += hdr.Size
		case tar.TypeSymlink:
			size += int64(len(hdr.Linkname))
		}
	}
	// Padding after the end-of-archive marker is part of the diff ID.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, storeError(err)
	}
	return &metadatav1.Layer{Digest: desc.Digest.String(), DiffId: h.Digest().String(), DiffSize: size}, nil
}

// storeError keeps the failures of the blob store (which fail the push) and
// drops those of the layer's content (which only make it no image).
func storeError(err error) error {
	if errdefs.IsUnavailable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

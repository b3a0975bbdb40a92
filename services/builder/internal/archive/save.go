package archive

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// SaveFormat is the archive format of a save.
type SaveFormat int

const (
	// FormatDocker is what `docker save` writes: manifest.json (which every
	// `docker load` reads) over an OCI image layout (which Docker 25+ and
	// other tools read).
	FormatDocker SaveFormat = iota
	// FormatOCI is an OCI image layout only.
	FormatOCI
)

// Annotations of an OCI index entry that name an image.
const (
	annotationRefName        = ocispec.AnnotationRefName // the tag, as Docker writes it
	annotationContainerdName = "io.containerd.image.name"
)

// dockerManifestEntry is one entry of a docker-archive's manifest.json.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// savedImage is an image to save and the tags to save it under.
type savedImage struct {
	img  *image.Image
	tags []reference.Reference
}

// Save writes the images the references name to w as a tar archive. A
// reference that is a tag keeps that tag in the archive; an image ID saves
// the image untagged, as Docker does. Every image is resolved before a byte
// is written, so an unknown reference fails cleanly.
func (s *Service) Save(ctx context.Context, refs []string, format SaveFormat, w io.Writer) error {
	if len(refs) == 0 {
		return errdefs.InvalidArgument("save needs at least one image reference")
	}
	var images []*savedImage
	byID := map[digest.Digest]*savedImage{}
	for _, r := range refs {
		img, err := s.images.Get(ctx, r)
		if err != nil {
			return err
		}
		si, ok := byID[img.ID()]
		if !ok {
			si = &savedImage{img: img}
			byID[img.ID()] = si
			images = append(images, si)
		}
		if _, isID := reference.ParseID(r); isID {
			continue
		}
		if _, isPrefix := reference.ParseIDPrefix(r); isPrefix && !containsTag(img, r) {
			continue
		}
		if tag, err := reference.ParseDefaultTag(r); err == nil && tag.Digest() == "" {
			si.tags = append(si.tags, tag)
		}
	}

	tw := tar.NewWriter(w)
	written := map[digest.Digest]bool{}
	writeBlob := func(d ocispec.Descriptor, data []byte) error {
		if written[d.Digest] {
			return nil
		}
		written[d.Digest] = true
		hdr := blobHeader(d)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if data != nil {
			_, err := tw.Write(data)
			return err
		}
		rc, err := s.blobs.Open(ctx, d.Digest)
		if err != nil {
			return fmt.Errorf("reading blob %s: %w", d.Digest, err)
		}
		defer rc.Close()
		n, err := io.Copy(tw, rc)
		if err != nil {
			return fmt.Errorf("reading blob %s: %w", d.Digest, err)
		}
		if n != d.Size {
			return errdefs.Internal("blob %s has %d bytes in the store, %d in its descriptor", d.Digest, n, d.Size)
		}
		return nil
	}
	if err := writeFile(tw, "blobs/", nil, tar.TypeDir); err != nil {
		return err
	}
	if err := writeFile(tw, "blobs/sha256/", nil, tar.TypeDir); err != nil {
		return err
	}

	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	index.SchemaVersion = 2
	var dockerManifest []dockerManifestEntry
	for _, si := range images {
		img := si.img
		for _, l := range img.Layers() {
			if err := writeBlob(l.Blob, nil); err != nil {
				return err
			}
		}
		cfg := img.ConfigDescriptor()
		if err := writeBlob(cfg, img.Record.GetConfig()); err != nil {
			return err
		}
		mdesc := img.ManifestDescriptor()
		if err := writeBlob(mdesc, img.Record.GetManifestBytes()); err != nil {
			return err
		}
		entry := dockerManifestEntry{Config: blobPath(cfg.Digest), RepoTags: []string{}}
		for _, l := range img.Layers() {
			entry.Layers = append(entry.Layers, blobPath(l.Blob.Digest))
		}
		if len(si.tags) == 0 {
			index.Manifests = append(index.Manifests, ocispec.Descriptor{MediaType: mdesc.MediaType, Digest: mdesc.Digest, Size: mdesc.Size})
		}
		for _, t := range si.tags {
			entry.RepoTags = append(entry.RepoTags, t.Familiar())
			index.Manifests = append(index.Manifests, ocispec.Descriptor{
				MediaType: mdesc.MediaType, Digest: mdesc.Digest, Size: mdesc.Size,
				Annotations: map[string]string{
					annotationContainerdName: t.String(),
					annotationRefName:        t.Tag(),
				},
			})
		}
		dockerManifest = append(dockerManifest, entry)
	}

	if format == FormatDocker {
		b, err := json.Marshal(dockerManifest)
		if err != nil {
			return err
		}
		if err := writeFile(tw, "manifest.json", b, tar.TypeReg); err != nil {
			return err
		}
	}
	b, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := writeFile(tw, "index.json", b, tar.TypeReg); err != nil {
		return err
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := writeFile(tw, ocispec.ImageLayoutFile, layout, tar.TypeReg); err != nil {
		return err
	}
	return tw.Close()
}

func containsTag(img *image.Image, r string) bool {
	t, err := reference.ParseDefaultTag(r)
	if err != nil {
		return false
	}
	for _, tag := range img.Record.GetRepoTags() {
		if tt, err := reference.ParseDefaultTag(tag); err == nil && tt.String() == t.String() {
			return true
		}
	}
	return false
}

func blobPath(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }

func blobHeader(d ocispec.Descriptor) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     blobPath(d.Digest),
		Mode:     0o444,
		Size:     d.Size,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	}
}

func writeFile(tw *tar.Writer, name string, data []byte, typ byte) error {
	hdr := &tar.Header{Typeflag: typ, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if typ == tar.TypeDir {
		hdr.Mode, hdr.Size = 0o755, 0
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

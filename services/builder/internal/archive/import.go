package archive

import (
	"archive/tar"
	"context"
	"io"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// ImportOptions are the options of `docker import`.
type ImportOptions struct {
	// Reference tags the image; none when empty.
	Reference string
	// Changes are Dockerfile instructions applied to the config (--change).
	Changes []string
	// Message is the history comment (--message); "Imported from -" when empty.
	Message string
	// Platform is "os/arch[/variant]"; linux/amd64 when empty.
	Platform string
}

// ImportResult is what an import recorded.
type ImportResult struct {
	ImageID   digest.Digest
	Reference string // the tag as Docker shows it, if any
}

// importLabel is the progress ID of the layer of an import until its digest
// is known.
const importLabel = "rootfs"

// Import turns a root filesystem tarball (plain, gzip, zstd or bzip2) into
// a one-layer image with the config `docker import` writes. The options are
// checked before a byte of r is read.
func (s *Service) Import(ctx context.Context, r io.Reader, opts ImportOptions, progress transfer.Progress) (ImportResult, error) {
	var tag reference.Reference
	if opts.Reference != "" {
		var err error
		if tag, err = reference.ParseTag(opts.Reference); err != nil {
			return ImportResult{}, err
		}
	}
	platform, err := transfer.ParsePlatform(opts.Platform)
	if err != nil {
		return ImportResult{}, err
	}
	cc := &image.ContainerConfig{}
	if err := applyChanges(cc, opts.Changes); err != nil {
		return ImportResult{}, err
	}
	message := opts.Message
	if message == "" {
		message = "Imported from -"
	}

	const what = "import tarball"
	in := transfer.NewProgressReader(r, progress, importLabel, transfer.ActionDownloading, 0)
	d, err := compression.NewReader(in, s.limits.Limits, what)
	if err != nil {
		return ImportResult{}, err
	}
	defer d.Close()
	w, err := s.blobs.Writer(ctx, layer.MediaTypeGzip)
	if err != nil {
		return ImportResult{}, err
	}
	desc, err := layer.Write(ctx, w, d, layer.WithCheck(func(h *tar.Header) error { return transfer.CheckEntry(h, what) }))
	if err != nil {
		return ImportResult{}, err
	}
	progress.Send(transfer.Update{ID: desc.Digest.String(), Action: transfer.ActionDone, Current: in.Count(), Total: in.Count()})

	created := s.now().UTC()
	cfg := &image.Config{
		Architecture:    platform.Architecture,
		Comment:         message,
		Config:          cc,
		ContainerConfig: &image.ContainerConfig{},
		Created:         created,
		History:         []image.History{{Created: created, Comment: message}},
		OS:              platform.OS,
		RootFS:          image.RootFS{Type: "layers", DiffIDs: []digest.Digest{desc.DiffID}},
		Variant:         platform.Variant,
	}
	n := image.New{
		Config: cfg,
		Layers: []image.Layer{{Blob: desc.OCI(), DiffID: desc.DiffID, DiffSize: desc.DiffSize}},
		Action: metadatav1.EventAction_EVENT_ACTION_IMPORT,
	}
	if !tag.IsZero() {
		n.Tags = []string{tag.String()}
	}
	rec, err := s.images.Put(ctx, n)
	if err != nil {
		return ImportResult{}, err
	}
	res := ImportResult{ImageID: digest.Digest(rec.GetId())}
	if !tag.IsZero() {
		res.Reference = tag.Familiar()
	}
	return res, nil
}

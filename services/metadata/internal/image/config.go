package image

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/dockerimage"
	"github.com/strata-build/strata/lib/errdefs"
)

// parseConfig parses an image config, Docker's or OCI's, leniently: what
// PutImage needs of it is checked by prepare.
func parseConfig(b []byte) (*dockerimage.Config, error) {
	var c dockerimage.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// diffIDStrings returns the config's diff IDs as strings.
func diffIDStrings(c *dockerimage.Config) []string {
	if c.RootFS.DiffIDs == nil {
		return nil
	}
	out := make([]string, len(c.RootFS.DiffIDs))
	for i, d := range c.RootFS.DiffIDs {
		out[i] = string(d)
	}
	return out
}

// manifest is the part of an OCI or Docker schema 2 manifest that is checked.
type manifest struct {
	SchemaVersion int `json:"schemaVersion"`
	Config        struct {
		Digest string `json:"digest"`
	} `json:"config"`
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	} `json:"layers"`
}

// prepared is a validated image ready to insert.
type prepared struct {
	img      *metadatav1.Image
	chainIDs []string
	blobs    []string
}

// prepare validates an image sent to PutImage and derives its fields from
// the config: the ID is the config's digest; created, history, labels, OS
// and architecture are the config's; the manifest must name the config and
// the layers. It returns a copy; img is not changed.
func prepare(in *metadatav1.Image) (*prepared, error) {
	if in == nil || len(in.GetConfig()) == 0 {
		return nil, errdefs.InvalidArgument("the image's config bytes are required").WithReason("INVALID_IMAGE")
	}
	img := proto.Clone(in).(*metadatav1.Image)
	img.RepoTags, img.RepoDigests, img.LastTagTime, img.RecordedAt = nil, nil, nil, nil
	id := digest.FromBytes(img.GetConfig()).String()
	if img.GetId() != "" && img.GetId() != id {
		return nil, errdefs.InvalidArgument("image ID %s is not the digest of its config (%s)", img.GetId(), id).
			WithReason("INVALID_IMAGE").WithDetail("image", img.GetId())
	}
	img.Id = id
	bad := func(format string, args ...any) error {
		return errdefs.InvalidArgument("image %s: %s", id, fmt.Sprintf(format, args...)).
			WithReason("INVALID_IMAGE").WithDetail("image", id)
	}
	cfg, err := parseConfig(img.GetConfig())
	if err != nil {
		return nil, bad("config is not an image config: %v", err)
	}
	if cfg.RootFS.Type != "" && cfg.RootFS.Type != "layers" {
		return nil, bad("config rootfs type is %q, want \"layers\"", cfg.RootFS.Type)
	}
	if len(cfg.RootFS.DiffIDs) != len(img.GetLayers()) {
		return nil, bad("config lists %d layers (rootfs.diff_ids) but the image has %d", len(cfg.RootFS.DiffIDs), len(img.GetLayers()))
	}
	var size int64
	blobs := []string{}
	for i, l := range img.GetLayers() {
		if _, err := digest.Parse(l.GetDigest()); err != nil {
			return nil, bad("layer %d: digest %q: %v", i, l.GetDigest(), err)
		}
		switch {
		case l.GetDiffId() == "":
			l.DiffId = string(cfg.RootFS.DiffIDs[i])
		case l.GetDiffId() != string(cfg.RootFS.DiffIDs[i]):
			return nil, bad("layer %d: diff ID %s is not the config's %s", i, l.GetDiffId(), cfg.RootFS.DiffIDs[i])
		}
		if _, err := digest.Parse(l.GetDiffId()); err != nil {
			return nil, bad("layer %d: diff ID %q: %v", i, l.GetDiffId(), err)
		}
		if l.GetDiffSize() < 0 || l.GetSize() < 0 {
			return nil, bad("layer %d: negative size", i)
		}
		size += l.GetDiffSize()
	}
	if err := checkManifest(img, bad); err != nil {
		return nil, err
	}
	if img.GetParent() != "" {
		if _, err := digest.Parse(img.GetParent()); err != nil {
			return nil, bad("parent %q is not an image ID: %v", img.GetParent(), err)
		}
	}
	blobs = append(blobs, img.GetManifest().GetDigest(), id)
	for _, l := range img.GetLayers() {
		blobs = append(blobs, l.GetDigest())
	}

	// A config without "created" parses as the zero time, which is no time.
	img.Created = nil
	if !cfg.Created.IsZero() {
		img.Created = timestamppb.New(cfg.Created)
	}
	img.History = make([]*metadatav1.HistoryEntry, 0, len(cfg.History))
	for _, h := range cfg.History {
		e := &metadatav1.HistoryEntry{CreatedBy: h.CreatedBy, Author: h.Author, Comment: h.Comment, EmptyLayer: h.EmptyLayer}
		if !h.Created.IsZero() {
			e.Created = timestamppb.New(h.Created)
		}
		img.History = append(img.History, e)
	}
	img.Labels = nil
	if cfg.Config != nil && len(cfg.Config.Labels) > 0 {
		img.Labels = cfg.Config.Labels
	}
	img.Os, img.Architecture, img.Variant = cfg.OS, cfg.Architecture, cfg.Variant
	img.Size = size
	return &prepared{img: img, chainIDs: ChainIDs(diffIDStrings(cfg)), blobs: blobs}, nil
}

func checkManifest(img *metadatav1.Image, bad func(string, ...any) error) error {
	desc := img.GetManifest()
	if desc == nil || desc.GetDigest() == "" {
		return bad("the manifest descriptor is required")
	}
	md, err := digest.Parse(desc.GetDigest())
	if err != nil {
		return bad("manifest digest %q: %v", desc.GetDigest(), err)
	}
	b := img.GetManifestBytes()
	if len(b) == 0 {
		return bad("the manifest bytes are required")
	}
	if got := md.Algorithm().FromBytes(b); got != md {
		return bad("manifest bytes have digest %s, not %s", got, md)
	}
	if desc.GetSize() != 0 && desc.GetSize() != int64(len(b)) {
		return bad("manifest is %d bytes, its descriptor says %d", len(b), desc.GetSize())
	}
	desc.Size = int64(len(b))
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return bad("manifest is not JSON: %v", err)
	}
	if m.Config.Digest != img.GetId() {
		return bad("manifest names config %s, not %s", m.Config.Digest, img.GetId())
	}
	if len(m.Layers) != len(img.GetLayers()) {
		return bad("manifest lists %d layers but the image has %d", len(m.Layers), len(img.GetLayers()))
	}
	for i, l := range img.GetLayers() {
		ml := m.Layers[i]
		if ml.Digest != l.GetDigest() {
			return bad("layer %d: digest %s is not the manifest's %s", i, l.GetDigest(), ml.Digest)
		}
		if l.GetMediaType() == "" {
			l.MediaType = ml.MediaType
		}
		if l.GetSize() == 0 {
			l.Size = ml.Size
		}
	}
	return nil
}

// Prepare validates an image as PutImage does and returns the row to
// insert, for loaders that write through a Backend in bulk (benchmarks).
func Prepare(img *metadatav1.Image, recordedAt time.Time) (NewImage, error) {
	p, err := prepare(img)
	if err != nil {
		return NewImage{}, err
	}
	p.img.RecordedAt = timestamppb.New(recordedAt)
	return NewImage{Image: p.img, ChainIDs: p.chainIDs, Blobs: p.blobs}, nil
}

// ChainIDs returns the chain IDs of a stack of layers, bottom first, as the
// OCI image spec defines them: the first is the first diff ID, each next one
// the digest of "<previous chain ID> <diff ID>".
func ChainIDs(diffIDs []string) []string {
	out := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1] + " " + d).String()
	}
	return out
}

package image

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/lib/errdefs"
)

// Manifest is a parsed image manifest, OCI or Docker schema 2.
type Manifest struct {
	MediaType string
	Config    ocispec.Descriptor
	Layers    []ocispec.Descriptor
}

// Index is a parsed image index, OCI or Docker manifest list.
type Index struct {
	MediaType string
	Manifests []ocispec.Descriptor
}

// document holds the fields that tell a manifest from an index, to refuse
// documents that could be read as either (CVE-2021-41190).
type document struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
}

func parseDocument(b []byte, what string) (*document, error) {
	if len(b) > MaxConfigSize {
		return nil, errdefs.ResourceExhausted("%s of %d bytes is over the %d-byte limit", what, len(b), MaxConfigSize)
	}
	var d document
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, errdefs.InvalidArgument("%s is not valid JSON: %v", what, err)
	}
	if d.Manifests != nil && (d.Config != nil || d.Layers != nil) {
		return nil, errdefs.InvalidArgument("%s has both manifests and config/layers: it could be read as an index or a manifest", what)
	}
	if d.SchemaVersion != 2 {
		return nil, errdefs.InvalidArgument("%s has schemaVersion %d, want 2", what, d.SchemaVersion)
	}
	return &d, nil
}

// IsIndexMediaType reports whether mt is an OCI index or Docker manifest list.
func IsIndexMediaType(mt string) bool { return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList }

// IsManifestMediaType reports whether mt is an OCI or Docker schema 2 manifest.
func IsManifestMediaType(mt string) bool {
	return mt == MediaTypeOCIManifest || mt == MediaTypeDockerManifest
}

// ParseManifest parses a manifest whose media type the caller learnt from
// its descriptor (or Content-Type). An empty mediaType accepts what the
// document says. The document's own mediaType, when present, must agree; it
// must have a config and no "manifests"; every descriptor must be valid and
// every layer of a known layer type.
func ParseManifest(b []byte, mediaType string) (*Manifest, error) {
	d, err := parseDocument(b, "manifest")
	if err != nil {
		return nil, err
	}
	mt, err := agreeMediaType(mediaType, d.MediaType, "manifest")
	if err != nil {
		return nil, err
	}
	if mt == "" {
		mt = MediaTypeOCIManifest // OCI 1.0 manifests may omit mediaType
	}
	if !IsManifestMediaType(mt) {
		return nil, errdefs.InvalidArgument("manifest has media type %q, not an image manifest", mt)
	}
	if d.Manifests != nil || d.Config == nil {
		return nil, errdefs.InvalidArgument("manifest has no config")
	}
	if err := validDescriptor(*d.Config, "manifest's config"); err != nil {
		return nil, err
	}
	for _, l := range d.Layers {
		if err := validDescriptor(l, "manifest's layer"); err != nil {
			return nil, err
		}
		if !IsLayerMediaType(l.MediaType) {
			return nil, errdefs.InvalidArgument("manifest's layer %s has unknown media type %q", l.Digest, l.MediaType).
				WithReason("UNKNOWN_MEDIA_TYPE")
		}
	}
	return &Manifest{MediaType: mt, Config: *d.Config, Layers: d.Layers}, nil
}

// ParseIndex parses an OCI index or Docker manifest list.
func ParseIndex(b []byte, mediaType string) (*Index, error) {
	d, err := parseDocument(b, "index")
	if err != nil {
		return nil, err
	}
	mt, err := agreeMediaType(mediaType, d.MediaType, "index")
	if err != nil {
		return nil, err
	}
	if mt == "" {
		mt = MediaTypeOCIIndex
	}
	if !IsIndexMediaType(mt) {
		return nil, errdefs.InvalidArgument("index has media type %q, not an image index", mt)
	}
	if d.Config != nil || d.Layers != nil {
		return nil, errdefs.InvalidArgument("index has config or layers: it could be read as a manifest")
	}
	var raw struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, errdefs.InvalidArgument("index is not valid JSON: %v", err)
	}
	for _, m := range raw.Manifests {
		if err := validDescriptor(m, "index entry"); err != nil {
			return nil, err
		}
	}
	return &Index{MediaType: mt, Manifests: raw.Manifests}, nil
}

// IsLayerMediaType reports whether mt is a layer type Strata can unpack.
func IsLayerMediaType(mt string) bool {
	switch mt {
	case MediaTypeOCILayer, MediaTypeOCILayerGzip, MediaTypeOCILayerZstd,
		MediaTypeDockerLayer, "application/vnd.docker.image.rootfs.diff.tar":
		return true
	}
	return false
}

func agreeMediaType(declared, embedded, what string) (string, error) {
	switch {
	case declared == "":
		return embedded, nil
	case embedded == "" || embedded == declared:
		return declared, nil
	default:
		return "", errdefs.InvalidArgument("%s says its media type is %q but was served as %q", what, embedded, declared)
	}
}

func validDescriptor(d ocispec.Descriptor, what string) error {
	if err := d.Digest.Validate(); err != nil {
		return errdefs.InvalidArgument("%s has digest %q: %v", what, d.Digest, err)
	}
	if d.Digest.Algorithm() != digest.SHA256 {
		return errdefs.InvalidArgument("%s has digest %s: only sha256 is supported", what, d.Digest)
	}
	if d.Size < 0 {
		return errdefs.InvalidArgument("%s %s has negative size %d", what, d.Digest, d.Size)
	}
	return nil
}

// matches checks that the manifest names the config and exactly the layers
// given, in order.
func (m *Manifest) matches(config digest.Digest, layers []Layer) error {
	if m.Config.Digest != config {
		return errdefs.InvalidArgument("manifest names config %s, but the config is %s", m.Config.Digest, config)
	}
	if len(m.Layers) != len(layers) {
		return errdefs.InvalidArgument("manifest lists %d layers but %d were given", len(m.Layers), len(layers))
	}
	for i, l := range m.Layers {
		if l.Digest != layers[i].Blob.Digest || l.Size != layers[i].Blob.Size {
			return errdefs.InvalidArgument("manifest's layer %d is %s (%d bytes), but %s (%d bytes) was given",
				i+1, l.Digest, l.Size, layers[i].Blob.Digest, layers[i].Blob.Size)
		}
	}
	return nil
}

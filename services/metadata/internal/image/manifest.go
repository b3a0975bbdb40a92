package image

import (
	_ "crypto/sha512" // sha512 digests, which the OCI distribution spec allows
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Docker's media types of manifests, beside the OCI ones of ocispec.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// MaxManifestSize is the largest manifest a repository takes, as the
// distribution registry's limit.
const MaxManifestSize = 4 << 20

// ParsedManifest is what a pushed manifest or index says about the content it
// needs.
type ParsedManifest struct {
	// Manifest has the digest, media type and content, and what derives
	// from them: artifact type, subject, annotations.
	Manifest *metadatav1.Manifest
	// Index is true for an index (or a Docker manifest list).
	Index bool
	// Config is an image manifest's config.
	Config ocispec.Descriptor
	// Blobs are the blobs the manifest needs in the blob store: its config
	// and its distributable layers.
	Blobs []string
	// Manifests are the manifests an index lists, and Platforms their
	// platforms ("" when an entry has none).
	Manifests, Platforms []string
}

// ParseManifest checks a manifest or index pushed with mediaType and, when
// d is not empty, the digest the client named, and says what it needs.
func ParseManifest(mediaType string, content []byte, d string) (*ParsedManifest, error) {
	bad := func(format string, args ...any) *errdefs.Error {
		return errdefs.InvalidArgument("manifest %s: %s", d, fmt.Sprintf(format, args...)).WithReason("MANIFEST_INVALID").WithDetail("digest", d)
	}
	if len(content) > MaxManifestSize {
		return nil, errdefs.ResourceExhausted("manifest %s is %d bytes, over the %d-byte limit", d, len(content), MaxManifestSize).WithReason("MANIFEST_TOO_LARGE")
	}
	if d == "" {
		d = digest.FromBytes(content).String()
	}
	want, err := digest.Parse(d)
	if err != nil {
		return nil, errdefs.InvalidArgument("manifest digest %q: %v", d, err).WithReason("DIGEST_INVALID").WithDetail("digest", d)
	}
	if got := want.Algorithm().FromBytes(content); got != want {
		return nil, errdefs.InvalidArgument("manifest content has digest %s, not %s", got, want).WithReason("DIGEST_INVALID").WithDetail("digest", d)
	}
	// Both shapes share mediaType, artifactType, subject and annotations;
	// the fields of either are read in one pass.
	var doc struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		ArtifactType  string               `json:"artifactType"`
		Config        *ocispec.Descriptor  `json:"config"`
		Layers        []ocispec.Descriptor `json:"layers"`
		Manifests     []ocispec.Descriptor `json:"manifests"`
		Subject       *ocispec.Descriptor  `json:"subject"`
		Annotations   map[string]string    `json:"annotations"`
	}
	if err := json.Unmarshal(content, &doc); err != nil {
		return nil, bad("not JSON: %v", err)
	}
	if mediaType == "" {
		mediaType = doc.MediaType
	}
	if doc.MediaType != "" && doc.MediaType != mediaType {
		return nil, bad("its mediaType is %q but it was sent as %q", doc.MediaType, mediaType)
	}
	if doc.SchemaVersion != 2 {
		return nil, bad("schemaVersion is %d, want 2", doc.SchemaVersion)
	}
	p := &ParsedManifest{Manifest: &metadatav1.Manifest{
		Digest: d, MediaType: mediaType, Content: content, ArtifactType: doc.ArtifactType, Annotations: doc.Annotations,
	}}
	if doc.Subject != nil {
		if err := doc.Subject.Digest.Validate(); err != nil {
			return nil, bad("subject digest %q: %v", doc.Subject.Digest, err)
		}
		p.Manifest.Subject = doc.Subject.Digest.String()
	}
	switch mediaType {
	case ocispec.MediaTypeImageManifest, MediaTypeDockerManifest:
		if doc.Config == nil {
			return nil, bad("an image manifest needs a config")
		}
		if doc.Manifests != nil {
			return nil, bad("an image manifest has no manifests")
		}
		p.Config = *doc.Config
		if p.Manifest.ArtifactType == "" {
			p.Manifest.ArtifactType = doc.Config.MediaType
		}
		for i, l := range append([]ocispec.Descriptor{*doc.Config}, doc.Layers...) {
			if err := l.Digest.Validate(); err != nil {
				return nil, bad("blob %d: digest %q: %v", i, l.Digest, err)
			}
			if !nonDistributable(l.MediaType) {
				p.Blobs = append(p.Blobs, l.Digest.String())
			}
		}
	case ocispec.MediaTypeImageIndex, MediaTypeDockerManifestList:
		if doc.Config != nil || doc.Layers != nil {
			return nil, bad("an index has neither config nor layers")
		}
		p.Index = true
		for i, m := range doc.Manifests {
			if err := m.Digest.Validate(); err != nil {
				return nil, bad("manifest %d: digest %q: %v", i, m.Digest, err)
			}
			p.Manifests = append(p.Manifests, m.Digest.String())
			platform := ""
			if m.Platform != nil {
				platform = m.Platform.OS + "/" + m.Platform.Architecture
				if m.Platform.Variant != "" {
					platform += "/" + m.Platform.Variant
				}
			}
			p.Platforms = append(p.Platforms, platform)
		}
	default:
		return nil, bad("media type %q is not a manifest or an index this registry takes", mediaType)
	}
	return p, nil
}

// nonDistributable reports whether a layer's media type says that it may
// not be pushed (it lives at its URLs): the OCI non-distributable types and
// Docker's foreign layers.
func nonDistributable(mediaType string) bool {
	return strings.Contains(mediaType, ".nondistributable.") || strings.Contains(mediaType, ".foreign.")
}

// ManifestBlobs returns the blobs a manifest needs in the blob store: itself,
// its config and its distributable layers. Malformed manifests give none;
// PutManifest refuses them.
func ManifestBlobs(m *metadatav1.Manifest) []string {
	p, err := ParseManifest(m.GetMediaType(), m.GetContent(), m.GetDigest())
	if err != nil {
		return nil
	}
	return append([]string{p.Manifest.GetDigest()}, p.Blobs...)
}

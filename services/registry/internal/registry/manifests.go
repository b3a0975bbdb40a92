package registry

import (
	"bytes"
	_ "crypto/sha512" // sha512 digests, which the spec allows
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
)

// maxManifestSize is the largest manifest taken, as the distribution
// registry's limit.
const maxManifestSize = 4 << 20

func (g *Registry) serveManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	ctx := r.Context()
	if strings.Contains(ref, ":") {
		if _, aerr := parseDigest(ref); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		resp, err := g.meta.GetManifest(ctx, &metadatav1.GetManifestRequest{Repository: name, Reference: ref})
		if err != nil {
			writeError(w, toAPIError(err, codeManifestUnknown))
			return
		}
		m := resp.GetManifest()
		h := w.Header()
		h.Set("Content-Type", m.GetMediaType())
		h.Set("Docker-Content-Digest", m.GetDigest())
		h.Set("Etag", `"`+m.GetDigest()+`"`)
		setLength(w, int64(len(m.GetContent())))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(m.GetContent())
		}
	case http.MethodPut:
		g.putManifest(w, r, name, ref)
	case http.MethodDelete:
		if _, err := g.meta.DeleteManifest(ctx, &metadatav1.DeleteManifestRequest{Repository: name, Reference: ref}); err != nil {
			writeError(w, toAPIError(err, codeManifestUnknown))
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		methodNotAllowed(w, "GET, HEAD, PUT, DELETE")
	}
}

// putManifest stores a manifest's bytes in the blob store, finds out
// whether it is an image (for Strata's image list), and records it.
func (g *Registry) putManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	ctx := r.Context()
	content, err := io.ReadAll(io.LimitReader(r.Body, maxManifestSize+1))
	if err != nil {
		writeError(w, newError(http.StatusBadRequest, codeManifestInvalid, "reading the manifest: "+err.Error()))
		return
	}
	if len(content) > maxManifestSize {
		writeError(w, newError(http.StatusRequestEntityTooLarge, codeManifestInvalid, fmt.Sprintf("a manifest may hold at most %d bytes", maxManifestSize)))
		return
	}
	mediaType := r.Header.Get("Content-Type")
	var doc struct {
		MediaType string              `json:"mediaType"`
		Subject   *ocispec.Descriptor `json:"subject"`
	}
	if err := json.Unmarshal(content, &doc); err != nil {
		writeError(w, newError(http.StatusBadRequest, codeManifestInvalid, "the manifest is not JSON: "+err.Error()))
		return
	}
	if mediaType == "" || mediaType == "application/json" {
		mediaType = doc.MediaType
	}
	var d digest.Digest
	var tags []string
	if strings.Contains(ref, ":") {
		d = digest.Digest(ref)
		if got := d.Algorithm().FromBytes(content); got != d {
			writeError(w, newError(http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("the manifest has digest %s, not %s", got, d)))
			return
		}
	} else {
		d = digest.FromBytes(content)
		tags = []string{ref}
	}
	if _, err := g.blobs.Put(ctx, bytes.NewReader(content), d, int64(len(content)), blobclient.WithMediaType(mediaType)); err != nil {
		writeError(w, toAPIError(err, codeManifestInvalid))
		return
	}
	m := &metadatav1.Manifest{Digest: d.String(), MediaType: mediaType, Content: content}
	img, err := g.imageOf(ctx, m)
	if err != nil {
		writeError(w, toAPIError(err, codeManifestInvalid))
		return
	}
	if _, err := g.meta.PutManifest(ctx, &metadatav1.PutManifestRequest{Repository: name, Tags: tags, Manifest: m, Image: img}); err != nil {
		writeError(w, toAPIError(err, codeManifestInvalid))
		return
	}
	h := w.Header()
	h.Set("Location", "/v2/"+name+"/manifests/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	if doc.Subject != nil {
		h.Set("OCI-Subject", doc.Subject.Digest.String())
	}
	setLength(w, 0)
	w.WriteHeader(http.StatusCreated)
}

func (g *Registry) serveTags(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET")
		return
	}
	q := r.URL.Query()
	n := 0
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			writeError(w, newError(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", fmt.Sprintf("n=%q is not a number of zero or more", s)))
			return
		}
		if n = v; n == 0 {
			writeJSON(w, "application/json", map[string]any{"name": name, "tags": []string{}})
			return
		}
	}
	last := q.Get("last")
	resp, err := g.meta.ListTags(r.Context(), &metadatav1.ListTagsRequest{Repository: name, PageSize: int32(n), Last: last})
	if err != nil {
		writeError(w, toAPIError(err, codeNameUnknown))
		return
	}
	tags := resp.GetTags()
	if tags == nil {
		tags = []string{}
	}
	if resp.GetMore() && len(tags) > 0 {
		next := url.Values{"n": {strconv.Itoa(len(tags))}, "last": {tags[len(tags)-1]}}
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, name, next.Encode()))
	}
	writeJSON(w, "application/json", map[string]any{"name": name, "tags": tags})
}

func (g *Registry) serveReferrers(w http.ResponseWriter, r *http.Request, name, ref string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET")
		return
	}
	d, aerr := parseDigest(ref)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	artifactType := r.URL.Query().Get("artifactType")
	resp, err := g.meta.ListReferrers(r.Context(), &metadatav1.ListReferrersRequest{Repository: name, Digest: d.String(), ArtifactType: artifactType})
	if err != nil {
		writeError(w, toAPIError(err, codeNameUnknown))
		return
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	for _, m := range resp.GetReferrers() {
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType: m.GetMediaType(), Digest: digest.Digest(m.GetDigest()), Size: m.GetSize(),
			ArtifactType: m.GetArtifactType(), Annotations: m.GetAnnotations(),
		})
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, ocispec.MediaTypeImageIndex, idx)
}

func writeJSON(w http.ResponseWriter, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, newError(http.StatusInternalServerError, "UNKNOWN", err.Error()))
		return
	}
	w.Header().Set("Content-Type", contentType)
	setLength(w, int64(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

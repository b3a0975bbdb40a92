package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// LoadedImage is one image a load recorded.
type LoadedImage struct {
	ImageID digest.Digest
	Tags    []string // as Docker shows them
}

// archive is what a load learnt from an archive's entries.
type archive struct {
	// docs holds the small JSON files (manifest.json, index.json, configs,
	// OCI manifests), by cleaned path.
	docs map[string][]byte
	// layers holds the blobs stored on the way, by cleaned path.
	layers map[string]image.Layer
	// links maps a symlink's path to its target's (docker save links
	// duplicate layers to one copy).
	links map[string]string
	// docBytes is the bytes docs hold.
	docBytes int64
}

// keep counts one more document of n bytes (or a link, of 0) against the
// limits of what a load holds in memory.
func (a *archive) keep(l transfer.Limits, n int64) error {
	if len(a.docs)+len(a.links) >= l.MaxArchiveDocuments {
		return errdefs.ResourceExhausted("the archive holds more than %d JSON documents and links, the limit of a load (--max-archive-documents)", l.MaxArchiveDocuments).
			WithReason("ARCHIVE_TOO_MANY_DOCUMENTS")
	}
	if a.docBytes += n; a.docBytes > l.MaxArchiveDocumentBytes {
		return errdefs.ResourceExhausted("the archive's JSON documents hold more than %d bytes, the limit of a load (--max-archive-document-bytes)", l.MaxArchiveDocumentBytes).
			WithReason("ARCHIVE_TOO_MANY_DOCUMENTS")
	}
	return nil
}

// Load reads a docker-archive (`docker save` output, any Docker version) or
// an OCI image-layout archive from r and records its images with their
// tags. Layers go to the blob store as they stream past; every layer is
// checked against its digest and against the diff ID its config lists, and
// every image is checked before any is recorded, so a bad archive records
// nothing.
func (s *Service) Load(ctx context.Context, r io.Reader, progress transfer.Progress) ([]LoadedImage, error) {
	a := &archive{docs: map[string][]byte{}, layers: map[string]image.Layer{}, links: map[string]string{}}
	counted := &countReader{r: r}
	tr := tar.NewReader(&archiveLimit{r: counted, max: s.limits.MaxArchiveSize})
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, archiveError(err)
		}
		if err := transfer.CheckEntry(hdr, "archive"); err != nil {
			return nil, err
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
			if err := a.keep(s.limits, 0); err != nil {
				return nil, err
			}
		}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			a.links[name] = path.Join(path.Dir(name), hdr.Linkname)
			continue
		case tar.TypeLink:
			a.links[name] = path.Clean(hdr.Linkname)
			continue
		case tar.TypeReg:
		default:
			continue
		}
		if err := s.loadEntry(ctx, a, name, hdr.Size, tr, progress); err != nil {
			return nil, err
		}
	}

	var pending []image.New
	var err error
	switch {
	case a.docs["manifest.json"] != nil:
		pending, err = s.dockerArchiveImages(ctx, a)
	case a.docs["index.json"] != nil:
		pending, err = s.ociLayoutImages(ctx, a)
	default:
		return nil, errdefs.InvalidArgument("the archive has neither manifest.json nor index.json: it is not a docker save or OCI image-layout archive").
			WithReason("NOT_AN_IMAGE_ARCHIVE")
	}
	if err != nil {
		return nil, err
	}
	// Assemble every image first: a load either records all or nothing
	// that can be checked up front.
	for _, n := range pending {
		if _, _, err := image.Assemble(n); err != nil {
			return nil, err
		}
	}
	var out []LoadedImage
	for _, n := range pending {
		rec, err := s.images.Put(ctx, n)
		if err != nil {
			return nil, err
		}
		li := LoadedImage{ImageID: digest.Digest(rec.GetId())}
		for _, t := range n.Tags {
			if r, err := reference.Parse(t); err == nil {
				li.Tags = append(li.Tags, r.Familiar())
			}
		}
		out = append(out, li)
	}
	return out, nil
}

// loadEntry takes one regular file of the archive: a small JSON document is
// kept in memory, anything else is stored as a layer blob.
func (s *Service) loadEntry(ctx context.Context, a *archive, name string, size int64, r io.Reader, progress transfer.Progress) error {
	br := bufio.NewReaderSize(r, 64<<10)
	if size <= image.MaxConfigSize {
		head, _ := br.Peek(1)
		if len(head) == 1 && (head[0] == '{' || head[0] == '[') {
			if err := a.keep(s.limits, size); err != nil {
				return err
			}
			b, err := io.ReadAll(br)
			if err != nil {
				return archiveError(err)
			}
			a.docs[name] = b
			return nil
		}
	}
	if _, isBlob := blobDigest(name); !isBlob && !strings.HasSuffix(name, ".tar") {
		// Not a layer by its name (VERSION, repositories, …): nothing a
		// manifest can name as a layer.
		_, err := io.Copy(io.Discard, br)
		return archiveError(err)
	}
	what := "archive entry " + name
	want := ocispec.Descriptor{}
	if d, ok := blobDigest(name); ok {
		want = ocispec.Descriptor{Digest: d, Size: size}
	}
	id := name
	if want.Digest != "" {
		id = want.Digest.String()
	}
	in := transfer.NewProgressReader(br, progress, id, transfer.ActionDownloading, size)
	c := compression.Detect(br)
	var l image.Layer
	var err error
	if c == compression.Uncompressed && want.Digest == "" {
		// docker save (before Docker 25) writes layers as plain tars, named
		// <id>/layer.tar: store them gzip-compressed, as Docker pushes them.
		l, err = s.writeLayer(ctx, in, what)
	} else {
		l, err = s.core.StoreLayer(ctx, in, want, "", what)
	}
	if err != nil {
		return archiveError(err) // the archive may end inside the layer
	}
	progress.Send(transfer.Update{ID: l.Blob.Digest.String(), Action: transfer.ActionDone, Current: size, Total: size})
	a.layers[name] = l
	return nil
}

// writeLayer stores a plain layer tar as a gzip blob through the layer
// pipeline, checking its entries on the way.
func (s *Service) writeLayer(ctx context.Context, r io.Reader, what string) (image.Layer, error) {
	w, err := s.blobs.Writer(ctx, layer.MediaTypeGzip)
	if err != nil {
		return image.Layer{}, err
	}
	d, err := compression.NewReader(r, s.limits.Limits, what)
	if err != nil {
		w.Close()
		return image.Layer{}, err
	}
	defer d.Close()
	desc, err := layer.Write(ctx, w, d, layer.WithCheck(func(h *tar.Header) error { return transfer.CheckEntry(h, what) }))
	if err != nil {
		return image.Layer{}, err
	}
	return image.Layer{Blob: desc.OCI(), DiffID: desc.DiffID, DiffSize: desc.DiffSize}, nil
}

// blobDigest returns the digest an OCI layout path names.
func blobDigest(name string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(name, "blobs/")
	if !ok {
		return "", false
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	if d.Validate() != nil {
		return "", false
	}
	return d, true
}

// resolve follows the links of an archive path.
func (a *archive) resolve(p string) string {
	p = path.Clean(p)
	for i := 0; i < 16; i++ {
		t, ok := a.links[p]
		if !ok {
			break
		}
		p = t
	}
	return p
}

// layer returns the stored layer at an archive path; a small layer kept in
// memory as a document is stored now.
func (s *Service) layerAt(ctx context.Context, a *archive, p string) (image.Layer, error) {
	p = a.resolve(p)
	if l, ok := a.layers[p]; ok {
		return l, nil
	}
	if b, ok := a.docs[p]; ok {
		want := ocispec.Descriptor{}
		if d, ok := blobDigest(p); ok {
			want = ocispec.Descriptor{Digest: d, Size: int64(len(b))}
		}
		l, err := s.core.StoreLayer(ctx, bytes.NewReader(b), want, "", "archive entry "+p)
		if err != nil {
			return image.Layer{}, err
		}
		a.layers[p] = l
		return l, nil
	}
	return image.Layer{}, errdefs.InvalidArgument("the archive lacks %s, which its manifest names: is it truncated?", p).WithReason("MISSING_ENTRY")
}

// dockerArchiveImages reads a docker-archive's manifest.json.
func (s *Service) dockerArchiveImages(ctx context.Context, a *archive) ([]image.New, error) {
	var entries []dockerManifestEntry
	if err := json.Unmarshal(a.docs["manifest.json"], &entries); err != nil {
		return nil, errdefs.InvalidArgument("the archive's manifest.json is not valid: %v", err)
	}
	// OCI manifests in the archive (Docker 25+ writes them beside
	// manifest.json): keep them verbatim, so the manifest digests stay.
	ociManifests := map[digest.Digest][]byte{}
	if idx := a.docs["index.json"]; idx != nil {
		if index, err := image.ParseIndex(idx, ""); err == nil {
			for _, m := range index.Manifests {
				if b := a.docs[blobPath(m.Digest)]; b != nil && image.IsManifestMediaType(m.MediaType) {
					if pm, err := image.ParseManifest(b, m.MediaType); err == nil {
						ociManifests[pm.Config.Digest] = b
					}
				}
			}
		}
	}
	var out []image.New
	for i, e := range entries {
		cfgPath := a.resolve(e.Config)
		configBytes, ok := a.docs[cfgPath]
		if !ok {
			return nil, errdefs.InvalidArgument("the archive lacks the config %s of image %d: is it truncated?", e.Config, i+1).WithReason("MISSING_ENTRY")
		}
		cfgDigest := digest.FromBytes(configBytes)
		if want, ok := configDigestOf(cfgPath); ok && want != cfgDigest {
			return nil, errdefs.InvalidArgument("the archive's config %s does not match its digest (got %s)", e.Config, cfgDigest).WithReason("DIGEST_MISMATCH")
		}
		cfg, err := image.ParseConfig(configBytes)
		if err != nil {
			return nil, fmt.Errorf("the archive's config %s: %w", e.Config, err)
		}
		if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
			return nil, errdefs.InvalidArgument("the archive's image %d lists %d layers, its config %d diff IDs", i+1, len(e.Layers), len(cfg.RootFS.DiffIDs))
		}
		n := image.New{ConfigBytes: configBytes, Action: metadatav1.EventAction_EVENT_ACTION_LOAD}
		for j, lp := range e.Layers {
			l, err := s.layerAt(ctx, a, lp)
			if err != nil {
				return nil, err
			}
			if l.DiffID != cfg.RootFS.DiffIDs[j] {
				return nil, errdefs.InvalidArgument("the archive's layer %s does not match the diff ID its config lists: got %s, want %s",
					lp, l.DiffID, cfg.RootFS.DiffIDs[j]).WithReason("DIFF_ID_MISMATCH")
			}
			n.Layers = append(n.Layers, l)
		}
		if mb, ok := ociManifests[cfgDigest]; ok {
			if m, err := image.ParseManifest(mb, ""); err == nil && sameBlobs(m, n.Layers) {
				n.Manifest, n.ManifestMediaType = mb, m.MediaType
			}
		}
		for _, t := range e.RepoTags {
			r, err := reference.ParseTag(t)
			if err != nil {
				return nil, fmt.Errorf("the archive's image %d: %w", i+1, err)
			}
			n.Tags = append(n.Tags, r.String())
		}
		out = append(out, n)
	}
	return out, nil
}

func sameBlobs(m *image.Manifest, layers []image.Layer) bool {
	if len(m.Layers) != len(layers) {
		return false
	}
	for i, l := range m.Layers {
		if l.Digest != layers[i].Blob.Digest {
			return false
		}
	}
	return true
}

// configDigestOf returns the digest a config's archive path names:
// "<hex>.json" (docker save before 25) or "blobs/sha256/<hex>".
func configDigestOf(p string) (digest.Digest, bool) {
	if d, ok := blobDigest(p); ok {
		return d, true
	}
	if hex, ok := strings.CutSuffix(path.Base(p), ".json"); ok {
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		if d.Validate() == nil {
			return d, true
		}
	}
	return "", false
}

// ociLayoutImages reads an OCI image layout's index.json (nested indexes
// included), taking the linux/amd64 image of each index entry that is one.
func (s *Service) ociLayoutImages(ctx context.Context, a *archive) ([]image.New, error) {
	index, err := image.ParseIndex(a.docs["index.json"], "")
	if err != nil {
		return nil, fmt.Errorf("the archive's index.json: %w", err)
	}
	var out []image.New
	byConfig := map[digest.Digest]int{} // one image per config, with all its tags
	for _, d := range index.Manifests {
		n, err := s.ociImage(ctx, a, d, 0)
		if err != nil {
			return nil, err
		}
		id := digest.FromBytes(n.ConfigBytes)
		i, seen := byConfig[id]
		if !seen {
			i = len(out)
			byConfig[id] = i
			out = append(out, n)
		}
		if tag, ok := tagOf(d.Annotations); ok {
			out[i].Tags = append(out[i].Tags, tag)
		}
	}
	return out, nil
}

func (s *Service) ociImage(ctx context.Context, a *archive, d ocispec.Descriptor, depth int) (image.New, error) {
	b, ok := a.docs[blobPath(d.Digest)]
	if !ok {
		return image.New{}, errdefs.InvalidArgument("the archive lacks the manifest %s its index names: is it truncated?", d.Digest).WithReason("MISSING_ENTRY")
	}
	if digest.FromBytes(b) != d.Digest {
		return image.New{}, errdefs.InvalidArgument("the archive's manifest %s does not match its digest", d.Digest).WithReason("DIGEST_MISMATCH")
	}
	if image.IsIndexMediaType(d.MediaType) {
		if depth > 2 {
			return image.New{}, errdefs.InvalidArgument("the archive nests indexes too deeply at %s", d.Digest)
		}
		idx, err := image.ParseIndex(b, d.MediaType)
		if err != nil {
			return image.New{}, err
		}
		child, err := transfer.PickPlatform(idx, transfer.Platform{OS: "linux", Architecture: "amd64"})
		if err != nil {
			return image.New{}, fmt.Errorf("the archive's index %s: %w", d.Digest, err)
		}
		return s.ociImage(ctx, a, child, depth+1)
	}
	m, err := image.ParseManifest(b, d.MediaType)
	if err != nil {
		return image.New{}, fmt.Errorf("the archive's manifest %s: %w", d.Digest, err)
	}
	configBytes, ok := a.docs[blobPath(m.Config.Digest)]
	if !ok {
		return image.New{}, errdefs.InvalidArgument("the archive lacks the config %s: is it truncated?", m.Config.Digest).WithReason("MISSING_ENTRY")
	}
	if digest.FromBytes(configBytes) != m.Config.Digest {
		return image.New{}, errdefs.InvalidArgument("the archive's config %s does not match its digest", m.Config.Digest).WithReason("DIGEST_MISMATCH")
	}
	cfg, err := image.ParseConfig(configBytes)
	if err != nil {
		return image.New{}, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return image.New{}, errdefs.InvalidArgument("the archive's manifest %s lists %d layers, its config %d diff IDs", d.Digest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	n := image.New{ConfigBytes: configBytes, Manifest: b, ManifestMediaType: m.MediaType, Action: metadatav1.EventAction_EVENT_ACTION_LOAD}
	for i, ld := range m.Layers {
		l, err := s.layerAt(ctx, a, blobPath(ld.Digest))
		if err != nil {
			return image.New{}, err
		}
		if l.Blob.Size != ld.Size {
			return image.New{}, errdefs.InvalidArgument("the archive's layer %s has %d bytes, its manifest says %d", ld.Digest, l.Blob.Size, ld.Size).WithReason("SIZE_MISMATCH")
		}
		if l.DiffID != cfg.RootFS.DiffIDs[i] {
			return image.New{}, errdefs.InvalidArgument("the archive's layer %s does not match the diff ID its config lists: got %s, want %s",
				ld.Digest, l.DiffID, cfg.RootFS.DiffIDs[i]).WithReason("DIFF_ID_MISMATCH")
		}
		l.Blob.MediaType = ld.MediaType
		n.Layers = append(n.Layers, l)
	}
	return n, nil
}

// tagOf returns the tag an OCI index entry's annotations name: the full
// name containerd and Docker write, or a ref.name that is a whole reference
// (skopeo's "name:tag"); a bare "latest" names no repository and gives none.
func tagOf(ann map[string]string) (string, bool) {
	for _, v := range []string{ann[annotationContainerdName], ann[annotationRefName]} {
		if v == "" || !strings.ContainsAny(v, ":/") {
			continue
		}
		if r, err := reference.ParseTag(v); err == nil {
			return r.String(), true
		}
	}
	return "", false
}

// archiveLimit fails once more than max bytes were read.
type archiveLimit struct {
	r   io.Reader
	max int64
	n   int64
}

func (l *archiveLimit) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return 0, errdefs.ResourceExhausted("the archive is over the %d-byte limit (--max-archive-size)", l.max).WithReason("ARCHIVE_LIMIT")
	}
	return n, err
}

func archiveError(err error) error {
	if err == nil || transfer.IsClassified(err) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errdefs.InvalidArgument("the archive is truncated: it ends inside an entry").WithReason("TRUNCATED")
	}
	if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) {
		return errdefs.InvalidArgument("the archive is not a valid tar stream: %v", err).WithReason("CORRUPT_ARCHIVE")
	}
	return err
}

// countReader counts the bytes read from r.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

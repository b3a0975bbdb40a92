package build

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// The fakes below stand in for the blob store and the metadata service in
// the package's fast tests; the integration tests run the real services.

type memBlobs struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	puts  int
	// layerWrites counts the layer blobs stored, by digest.
	layerWrites map[digest.Digest]int
}

func newMemBlobs() *memBlobs {
	return &memBlobs{blobs: map[digest.Digest][]byte{}, layerWrites: map[digest.Digest]int{}}
}

func (m *memBlobs) Put(_ context.Context, desc ocispec.Descriptor, p []byte) error {
	if digest.FromBytes(p) != desc.Digest {
		return errdefs.InvalidArgument("digest mismatch")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	m.blobs[desc.Digest] = bytes.Clone(p)
	return nil
}

func (m *memBlobs) Open(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return nil, errdefs.NotFound("blob %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memBlobs) Writer(context.Context, string) (layer.BlobWriter, error) {
	return &memWriter{m: m}, nil
}

type memWriter struct {
	m   *memBlobs
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) Close() error                { return nil }
func (w *memWriter) Commit(_ context.Context, size int64, d digest.Digest) error {
	if int64(w.buf.Len()) != size || digest.FromBytes(w.buf.Bytes()) != d {
		return errdefs.InvalidArgument("layer does not match")
	}
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	w.m.puts++
	w.m.layerWrites[d]++
	w.m.blobs[d] = bytes.Clone(w.buf.Bytes())
	return nil
}

type memIndex struct {
	mu      sync.Mutex
	images  map[string]*metadatav1.Image
	tags    map[string]string
	records map[string]*metadatav1.CacheRecord
	lookups int
}

func newMemIndex() *memIndex {
	return &memIndex{images: map[string]*metadatav1.Image{}, tags: map[string]string{}, records: map[string]*metadatav1.CacheRecord{}}
}

func normalTag(t string) string {
	if !strings.Contains(t[strings.LastIndex(t, "/")+1:], ":") {
		t += ":latest"
	}
	return t
}

func (m *memIndex) PutImage(_ context.Context, in *metadatav1.PutImageRequest, _ ...grpc.CallOption) (*metadatav1.PutImageResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	img := proto.Clone(in.GetImage()).(*metadatav1.Image)
	if p := img.GetParent(); p != "" {
		if _, ok := m.images[p]; !ok {
			return nil, errdefs.FailedPrecondition("parent %s unknown", p)
		}
	}
	m.images[img.GetId()] = img
	for _, t := range in.GetTags() {
		m.tags[normalTag(t)] = img.GetId()
	}
	return &metadatav1.PutImageResponse{Image: img}, nil
}

func (m *memIndex) GetImage(_ context.Context, in *metadatav1.GetImageRequest, _ ...grpc.CallOption) (*metadatav1.GetImageResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ref := in.GetReference()
	if id, ok := m.tags[normalTag(ref)]; ok {
		ref = id
	}
	img, ok := m.images[ref]
	if !ok {
		return nil, errdefs.NotFound("image %s not found", in.GetReference())
	}
	return &metadatav1.GetImageResponse{Image: img}, nil
}

func (m *memIndex) TagImage(_ context.Context, in *metadatav1.TagImageRequest, _ ...grpc.CallOption) (*metadatav1.TagImageResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.images[in.GetSource()]; !ok {
		return nil, errdefs.NotFound("image %s", in.GetSource())
	}
	t := normalTag(in.GetTarget())
	m.tags[t] = in.GetSource()
	return &metadatav1.TagImageResponse{ImageId: in.GetSource(), Tag: t}, nil
}

func (m *memIndex) LookupCacheRecords(_ context.Context, in *metadatav1.LookupCacheRecordsRequest, _ ...grpc.CallOption) (*metadatav1.LookupCacheRecordsResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	resp := &metadatav1.LookupCacheRecordsResponse{}
	for _, k := range in.GetKeys() {
		if r, ok := m.records[k]; ok {
			resp.Records = append(resp.Records, r)
		}
	}
	return resp, nil
}

// PutManifest is not used by builds.
func (m *memIndex) PutManifest(context.Context, *metadatav1.PutManifestRequest, ...grpc.CallOption) (*metadatav1.PutManifestResponse, error) {
	return nil, errdefs.Unimplemented("PutManifest")
}

func (m *memIndex) PutCacheRecord(_ context.Context, in *metadatav1.PutCacheRecordRequest, _ ...grpc.CallOption) (*metadatav1.PutCacheRecordResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.images[in.GetRecord().GetImageId()]; !ok {
		return nil, errdefs.FailedPrecondition("image %s unknown", in.GetRecord().GetImageId())
	}
	// As the metadata service: the first writer wins, unless the record
	// names the image of the one it replaces.
	if old, ok := m.records[in.GetRecord().GetKey()]; ok && old.GetImageId() != in.GetRecord().GetImageId() && old.GetImageId() != in.GetReplacesImageId() {
		if _, live := m.images[old.GetImageId()]; live {
			return &metadatav1.PutCacheRecordResponse{Record: old}, nil
		}
	}
	m.records[in.GetRecord().GetKey()] = in.GetRecord()
	return &metadatav1.PutCacheRecordResponse{Record: in.GetRecord()}, nil
}

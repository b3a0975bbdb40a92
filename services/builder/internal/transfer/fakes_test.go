package transfer

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// memBlobs is an in-memory blob store for the fast unit tests; the
// integration tests run the real blobstore service.
type memBlobs struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
}

func newMemBlobs() *memBlobs { return &memBlobs{blobs: map[digest.Digest][]byte{}} }

func (m *memBlobs) Put(_ context.Context, desc ocispec.Descriptor, p []byte) error {
	if digest.FromBytes(p) != desc.Digest || int64(len(p)) != desc.Size {
		return errdefs.InvalidArgument("blob does not match %s", desc.Digest)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[desc.Digest] = bytes.Clone(p)
	return nil
}

func (m *memBlobs) Writer(context.Context, string) (layer.BlobWriter, error) {
	return &memWriter{m: m}, nil
}

func (m *memBlobs) Missing(_ context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []digest.Digest
	for _, d := range ds {
		if _, ok := m.blobs[d]; !ok {
			out = append(out, d)
		}
	}
	return out, nil
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

func (m *memBlobs) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blobs)
}

type memWriter struct {
	m   *memBlobs
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) Close() error                { return nil }
func (w *memWriter) Commit(_ context.Context, size int64, expected digest.Digest) error {
	if int64(w.buf.Len()) != size || digest.FromBytes(w.buf.Bytes()) != expected {
		return errdefs.InvalidArgument("upload does not match %s", expected)
	}
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	if _, ok := w.m.blobs[expected]; ok {
		return errdefs.AlreadyExists("blob %s", expected)
	}
	w.m.blobs[expected] = bytes.Clone(w.buf.Bytes())
	return nil
}

// memImages keeps image records by ID and tag. Transfers use no other
// method of the metadata service (the embedded nil client panics).
type memImages struct {
	metadatav1.ImageServiceClient

	mu     sync.Mutex
	byID   map[string]*metadatav1.Image
	tags   map[string]string
	putReq []*metadatav1.PutImageRequest
}

func newMemImages() *memImages {
	return &memImages{byID: map[string]*metadatav1.Image{}, tags: map[string]string{}}
}

func (m *memImages) PutImage(_ context.Context, in *metadatav1.PutImageRequest, _ ...grpc.CallOption) (*metadatav1.PutImageResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	img := in.GetImage()
	if old, ok := m.byID[img.GetId()]; ok {
		img.RepoDigests = old.RepoDigests
	}
	img.RepoDigests = append(img.RepoDigests, in.GetRepoDigests()...)
	m.byID[img.GetId()] = img
	for _, t := range in.GetTags() {
		m.tags[t] = img.GetId()
	}
	m.putReq = append(m.putReq, in)
	return &metadatav1.PutImageResponse{Image: img}, nil
}

func (m *memImages) GetImage(_ context.Context, in *metadatav1.GetImageRequest, _ ...grpc.CallOption) (*metadatav1.GetImageResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if img, ok := m.byID[in.GetReference()]; ok {
		return &metadatav1.GetImageResponse{Image: img}, nil
	}
	if r, err := reference.ParseDefaultTag(in.GetReference()); err == nil {
		if id, ok := m.tags[r.String()]; ok {
			return &metadatav1.GetImageResponse{Image: m.byID[id]}, nil
		}
	}
	return nil, errdefs.NotFound("no image %q", in.GetReference())
}

func (m *memImages) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}

type fixture struct {
	blobs  *memBlobs
	images *memImages
	svc    *Service
}

func newFixture(t testing.TB, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{blobs: newMemBlobs(), images: newMemImages()}
	f.svc = New(f.blobs, image.NewStore(f.blobs, f.images), slog.New(slog.DiscardHandler), opts...)
	return f
}

// putTag is the PutImage request that points one more tag at a recorded image.
func putTag(f *fixture, id digest.Digest, tag string) *metadatav1.PutImageRequest {
	f.images.mu.Lock()
	img := f.images.byID[id.String()]
	f.images.mu.Unlock()
	r, err := reference.ParseTag(tag)
	if err != nil {
		panic(err)
	}
	return &metadatav1.PutImageRequest{Image: img, Tags: []string{r.String()}}
}

// Package transfertest holds in-memory stand-ins for the blob store and the
// metadata service, for the fast unit tests of transfer and archive; the
// integration tests run the real services.
package transfertest

import (
	"bytes"
	"context"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// Blobs is an in-memory blob store.
type Blobs struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
}

// NewBlobs returns an empty Blobs.
func NewBlobs() *Blobs { return &Blobs{blobs: map[digest.Digest][]byte{}} }

func (m *Blobs) Put(_ context.Context, desc ocispec.Descriptor, p []byte) error {
	if digest.FromBytes(p) != desc.Digest || int64(len(p)) != desc.Size {
		return errdefs.InvalidArgument("blob does not match %s", desc.Digest)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[desc.Digest] = bytes.Clone(p)
	return nil
}

func (m *Blobs) Writer(context.Context, string) (layer.BlobWriter, error) {
	return &writer{m: m}, nil
}

func (m *Blobs) Missing(_ context.Context, ds []digest.Digest) ([]digest.Digest, error) {
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

func (m *Blobs) Open(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return nil, errdefs.NotFound("blob %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Count returns how many blobs m holds.
func (m *Blobs) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blobs)
}

type writer struct {
	m   *Blobs
	buf bytes.Buffer
}

func (w *writer) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *writer) Close() error                { return nil }
func (w *writer) Commit(_ context.Context, size int64, expected digest.Digest) error {
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

// Images is an in-memory metadata service keeping image records by ID and
// tag. Transfers use no other method of it (the embedded nil client panics).
type Images struct {
	metadatav1.ImageServiceClient

	mu     sync.Mutex
	byID   map[string]*metadatav1.Image
	tags   map[string]string
	putReq []*metadatav1.PutImageRequest
}

// NewImages returns an empty Images.
func NewImages() *Images {
	return &Images{byID: map[string]*metadatav1.Image{}, tags: map[string]string{}}
}

func (m *Images) PutImage(_ context.Context, in *metadatav1.PutImageRequest, _ ...grpc.CallOption) (*metadatav1.PutImageResponse, error) {
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

func (m *Images) GetImage(_ context.Context, in *metadatav1.GetImageRequest, _ ...grpc.CallOption) (*metadatav1.GetImageResponse, error) {
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

// Count returns how many images m holds.
func (m *Images) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}

// PutTag is the PutImage request that points one more tag at the image m
// records as id.
func (m *Images) PutTag(id digest.Digest, tag string) (*metadatav1.PutImageRequest, error) {
	m.mu.Lock()
	img := m.byID[id.String()]
	m.mu.Unlock()
	r, err := reference.ParseTag(tag)
	if err != nil {
		return nil, err
	}
	return &metadatav1.PutImageRequest{Image: img, Tags: []string{r.String()}}, nil
}

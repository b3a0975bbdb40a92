package archive

import (
	"log/slog"
	"testing"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/transfer"
	"github.com/strata-build/strata/services/builder/internal/transfer/transfertest"
)

type fixture struct {
	blobs  *transfertest.Blobs
	images *transfertest.Images
	svc    *Service
}

func newFixture(t testing.TB, opts ...Option) *fixture {
	t.Helper()
	return newLimitedFixture(t, transfer.Limits{}, opts...)
}

// newLimitedFixture is a fixture whose transfers accept at most l.
func newLimitedFixture(t testing.TB, l transfer.Limits, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{blobs: transfertest.NewBlobs(), images: transfertest.NewImages()}
	images := image.NewStore(f.blobs, f.images)
	core := transfer.New(f.blobs, images, slog.New(slog.DiscardHandler), transfer.WithLimits(l))
	f.svc = New(core, f.blobs, images, opts...)
	return f
}

// putTag is the PutImage request that points one more tag at a recorded image.
func putTag(f *fixture, id digest.Digest, tag string) *metadatav1.PutImageRequest {
	req, err := f.images.PutTag(id, tag)
	if err != nil {
		panic(err)
	}
	return req
}

// Package archive moves images between Strata and files: import (a root
// filesystem tarball), load and save (docker-archive and OCI image-layout
// archives). It shares with package transfer, which talks to registries, the
// checks on layers and tar entries and the progress reports.
//
// Like every transfer, an operation stores blobs first and records the image
// last, through image.Store, in one metadata call: a failed or cancelled one
// leaves no image and no tag, only unreferenced blobs that garbage collection
// removes. Archives are never trusted: their manifests and layers are checked
// against their digests, decompression is bounded, and tar entries that would
// escape a root are refused.
package archive

import (
	"time"

	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// Service imports, loads and saves images.
type Service struct {
	// core stores layers, with the same checks and limits as a pull.
	core   *transfer.Service
	blobs  transfer.Blobs
	images *image.Store
	limits transfer.Limits
	now    func() time.Time
}

// Option configures a Service.
type Option func(*Service)

// WithClock sets the clock that dates imported images.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New returns a Service storing into blobs through core, under core's
// limits, and recording through images.
func New(core *transfer.Service, blobs transfer.Blobs, images *image.Store, opts ...Option) *Service {
	s := &Service{core: core, blobs: blobs, images: images, limits: core.Limits(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

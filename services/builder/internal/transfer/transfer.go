// Package transfer moves images between Strata and registries: pull and push
// (any OCI or Docker registry, through go-containerregistry). It also holds
// what package archive (import, load and save) shares with them: storing and
// checking layers, tar entry checks, limits and progress reports.
//
// Every operation stores blobs first and records the image last, through
// image.Store, in one metadata call: a failed or cancelled transfer leaves no
// image and no tag, only unreferenced blobs that garbage collection removes.
// Input is never trusted: manifests and layers are checked against their
// digests, decompression is bounded, and tar entries that would escape a root
// are refused.
package transfer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// Blobs is the part of the blob store transfers use.
type Blobs interface {
	image.Blobs
	// Writer opens an upload of a blob of the given media type; its digest
	// is given at Commit.
	Writer(ctx context.Context, mediaType string) (layer.BlobWriter, error)
	// Missing returns those of the digests the store does not hold.
	Missing(ctx context.Context, digests []digest.Digest) ([]digest.Digest, error)
	// Open reads a blob from its start (ErrNotFound when absent).
	Open(ctx context.Context, d digest.Digest) (io.ReadCloser, error)
}

// Limits bound what a transfer accepts, against decompression bombs and
// oversized input. A zero field takes its default.
type Limits struct {
	// Limits bound the decompression of each layer and tarball.
	compression.Limits
	// MaxArchiveSize is the most bytes a load archive may hold.
	MaxArchiveSize int64
	// MaxArchiveDocuments is the most JSON documents (manifests, configs,
	// indexes) and links a load archive may hold: a load keeps them in
	// memory until every image is checked.
	MaxArchiveDocuments int
	// MaxArchiveDocumentBytes is the most bytes those documents may hold
	// together.
	MaxArchiveDocumentBytes int64
}

// Default limits of a load archive.
const (
	DefaultMaxArchiveSize          = 256 << 30
	DefaultMaxArchiveDocuments     = 100_000
	DefaultMaxArchiveDocumentBytes = 256 << 20
)

func (l Limits) withDefaults() Limits {
	l.Limits = l.Limits.WithDefaults()
	if l.MaxArchiveSize <= 0 {
		l.MaxArchiveSize = DefaultMaxArchiveSize
	}
	if l.MaxArchiveDocuments <= 0 {
		l.MaxArchiveDocuments = DefaultMaxArchiveDocuments
	}
	if l.MaxArchiveDocumentBytes <= 0 {
		l.MaxArchiveDocumentBytes = DefaultMaxArchiveDocumentBytes
	}
	return l
}

// IsClassified reports whether err already carries an errdefs kind.
func IsClassified(err error) bool {
	var e *errdefs.Error
	return errors.As(err, &e)
}

// Service runs transfers.
type Service struct {
	blobs  Blobs
	images *image.Store
	limits Limits
	log    *slog.Logger
	// transport is the HTTP transport to registries.
	transport http.RoundTripper
	// retryBackoff is the first wait before retrying a registry request.
	retryBackoff time.Duration
}

// Option configures a Service.
type Option func(*Service)

// WithLimits sets the limits of what transfers accept.
func WithLimits(l Limits) Option { return func(s *Service) { s.limits = l.withDefaults() } }

// WithEgress sets which registry addresses may be reached (by default only
// public ones).
func WithEgress(p egress.Policy) Option { return func(s *Service) { s.transport = p.Transport() } }

// WithRetryBackoff sets the first wait before a registry request is retried.
func WithRetryBackoff(d time.Duration) Option { return func(s *Service) { s.retryBackoff = d } }

// New returns a Service storing into blobs and recording through images.
func New(blobs Blobs, images *image.Store, log *slog.Logger, opts ...Option) *Service {
	s := &Service{
		blobs:        blobs,
		images:       images,
		limits:       Limits{}.withDefaults(),
		log:          log,
		transport:    egress.Policy{}.Transport(),
		retryBackoff: time.Second,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Limits returns the limits of what the Service accepts.
func (s *Service) Limits() Limits { return s.limits }

// Action says what is happening to one blob of a transfer.
type Action int

// The actions, as builderv1.TransferAction names them.
const (
	ActionWaiting Action = iota + 1
	ActionDownloading
	ActionUploading
	ActionVerifying
	ActionExists
	ActionMounted
	ActionDone
	ActionRetrying
)

// Update is the progress of one blob.
type Update struct {
	// ID is the blob's digest, or a label while the digest is unknown.
	ID      string
	Action  Action
	Current int64
	Total   int64
	Message string
}

// Progress receives updates; it may be called from several goroutines, and
// must not block for long. A nil Progress drops them.
type Progress func(Update)

// Send passes u to p, if p is not nil.
func (p Progress) Send(u Update) {
	if p != nil {
		p(u)
	}
}

// ProgressReader reports the bytes read through it, at most every
// progressEvery bytes (and at the end), so a fast transfer does not flood the
// stream.
type ProgressReader struct {
	r        io.Reader
	progress Progress
	id       string
	action   Action
	total    int64

	mu       sync.Mutex
	n        int64
	reported int64
}

const progressEvery = 4 << 20

// NewProgressReader reports to p, as action on the blob id of total bytes,
// the bytes read through r.
func NewProgressReader(r io.Reader, p Progress, id string, action Action, total int64) *ProgressReader {
	return &ProgressReader{r: r, progress: p, id: id, action: action, total: total}
}

func (p *ProgressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.mu.Lock()
		p.n += int64(n)
		cur := p.n
		report := cur-p.reported >= progressEvery
		if report {
			p.reported = cur
		}
		p.mu.Unlock()
		if report {
			p.progress.Send(Update{ID: p.id, Action: p.action, Current: cur, Total: p.total})
		}
	}
	return n, err
}

// Count returns the bytes read so far.
func (p *ProgressReader) Count() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/lease"
	"github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// Leases start the lease each build holds, from its start until its image
// is recorded, on every blob it stores or uses (base images, cache hits,
// its layers, configs and manifests), so that garbage collection, even
// with no grace period, deletes none of them while the build runs.
type Leases interface {
	// Start starts a lease; the build releases it when it ends.
	Start(ctx context.Context) (Lease, error)
}

// Lease holds blobs against garbage collection until released.
type Lease interface {
	// Add holds blobs, stored or not: a blob stored after Add returned is
	// safe; one stored before may have been collected in between.
	Add(ctx context.Context, ds ...digest.Digest) error
	// Hold holds blobs and returns those the blob store no longer has
	// (collected before they were held): the caller stores them again.
	Hold(ctx context.Context, ds ...digest.Digest) ([]digest.Digest, error)
	// Release ends the lease.
	Release(ctx context.Context) error
}

// MetadataLeases are leases of the metadata service (lib/lease). A lease
// that lasts Expiry is renewed every third of it while the build runs, by
// moving its blobs to a new lease, so that a build outlives any expiry and
// the blobs of a builder that died are free again within Expiry.
type MetadataLeases struct {
	Images metadatav1.ImageServiceClient
	Blobs  lease.Blobs
	// Expiry is how long a lease lasts unless renewed (DefaultLeaseExpiry
	// when zero).
	Expiry time.Duration
	Log    *slog.Logger
}

// DefaultLeaseExpiry is how long a build's lease outlives a builder that
// stopped renewing it.
const DefaultLeaseExpiry = 30 * time.Minute

// maxLeaseAdd bounds the digests of one AddLeaseResource call (the
// metadata service takes 10,000).
const maxLeaseAdd = 5000

// Start implements Leases.
func (m MetadataLeases) Start(ctx context.Context) (Lease, error) {
	expiry := m.Expiry
	if expiry <= 0 {
		expiry = DefaultLeaseExpiry
	}
	l, err := lease.Create(ctx, m.Images, "", expiry)
	if err != nil {
		return nil, fmt.Errorf("taking the build's lease: %w", err)
	}
	ml := &metadataLease{m: m, expiry: expiry, cur: l, held: map[digest.Digest]bool{}, present: map[digest.Digest]bool{},
		stop: make(chan struct{}), stopped: make(chan struct{})}
	go ml.renew(context.WithoutCancel(ctx))
	return ml, nil
}

type metadataLease struct {
	m      MetadataLeases
	expiry time.Duration
	// mu orders Add, Hold and a renewal, so that a renewal moves every
	// digest held so far to the new lease before the old one ends.
	mu   sync.Mutex
	cur  *lease.Lease
	held map[digest.Digest]bool
	// present are the held blobs known to be stored: an image referenced
	// them when they were held, or the blob store was seen to have them.
	// Held, they stay until Release, so Hold does not ask about them again
	// (a cached step's image shares every layer of its parent's).
	present map[digest.Digest]bool
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func (l *metadataLease) Add(ctx context.Context, ds ...digest.Digest) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addLocked(ctx, l.cur, ds)
}

// addLocked holds ds in lease to. The blobs an image references are
// stored (see lease.Lease.Add): they join present.
func (l *metadataLease) addLocked(ctx context.Context, to *lease.Lease, ds []digest.Digest) error {
	for c := range slices.Chunk(ds, maxLeaseAdd) {
		referenced, err := to.Add(ctx, c...)
		if err != nil {
			return fmt.Errorf("holding blobs in lease %s: %w", to.ID, err)
		}
		for _, d := range referenced {
			l.present[d] = true
		}
	}
	for _, d := range ds {
		l.held[d] = true
	}
	return nil
}

func (l *metadataLease) Hold(ctx context.Context, ds ...digest.Digest) ([]digest.Digest, error) {
	var ask []digest.Digest
	l.mu.Lock()
	for _, d := range ds {
		if !l.present[d] && !slices.Contains(ask, d) {
			ask = append(ask, d)
		}
	}
	l.mu.Unlock()
	if len(ask) == 0 {
		return nil, nil
	}
	if err := l.Add(ctx, ask...); err != nil {
		return nil, err
	}
	// Only about the blobs no image references does the blob store know
	// more than the lease.
	l.mu.Lock()
	ask = slices.DeleteFunc(ask, func(d digest.Digest) bool { return l.present[d] })
	l.mu.Unlock()
	if len(ask) == 0 {
		return nil, nil
	}
	have, err := l.m.Blobs.Exists(ctx, ask)
	if err != nil {
		return nil, err
	}
	var missing []digest.Digest
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ask {
		if _, ok := have[d]; ok {
			l.present[d] = true
		} else {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// renew moves the blobs to a new lease every third of the expiry, until
// Release.
func (l *metadataLease) renew(ctx context.Context) {
	defer close(l.stopped)
	t := time.NewTicker(l.expiry / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if err := l.renewOnce(ctx); err != nil && l.m.Log != nil {
			// The old lease still holds the blobs until it expires; the
			// next tick tries again.
			l.m.Log.WarnContext(ctx, "renewing a build's lease", "lease", l.cur.ID, "error", err)
		}
	}
}

func (l *metadataLease) renewOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.expiry/3)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	next, err := lease.Create(ctx, l.m.Images, "", l.expiry)
	if err != nil {
		return err
	}
	ds := make([]digest.Digest, 0, len(l.held))
	for d := range l.held {
		ds = append(ds, d)
	}
	if err := l.addLocked(ctx, next, ds); err != nil {
		_ = next.Release(ctx)
		return err
	}
	old := l.cur
	l.cur = next
	return old.Release(ctx)
}

func (l *metadataLease) Release(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	<-l.stopped
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.Release(ctx)
}

// leased is a build's view of the images and layers: every image it reads
// and every blob it stores is held by the build's lease first.
type leased struct {
	Images
	layers exec.Layers
	lease  Lease
	read   *readImages
}

func newLeased(images Images, layers exec.Layers, l Lease) leased {
	return leased{Images: images, layers: layers, lease: l, read: &readImages{byID: map[string]*image.Image{}}}
}

// readImages are the images a build read by ID, their blobs held: the
// same image is read once per build (a cached step's image is read to
// check it, and again as the next step's parent or the build's result).
type readImages struct {
	mu   sync.Mutex
	byID map[string]*image.Image
}

func (r *readImages) get(id string) *image.Image {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

func (r *readImages) put(img *image.Image) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID[string(img.ID())] = img
}

// prefetchConcurrency bounds the images prefetch reads at once.
const prefetchConcurrency = 8

// prefetch reads the images of ids at once and holds all their blobs with
// one lease call and one blob store call, so that the steps their cache
// records serve read them without a round trip each. An image that is not
// found, or whose blobs are not all stored, is left for Get to report.
func (h leased) prefetch(ctx context.Context, ids []string) error {
	imgs := make([]*image.Image, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			img, err := h.Images.Get(gctx, id)
			if errdefs.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading cached image %s: %w", id, err)
			}
			imgs[i] = img
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var ds []digest.Digest
	for _, img := range imgs {
		if img != nil {
			ds = append(ds, imageBlobs(img)...)
		}
	}
	missing, err := h.lease.Hold(ctx, ds...)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		if img != nil && !slices.ContainsFunc(imageBlobs(img), func(d digest.Digest) bool { return slices.Contains(missing, d) }) {
			h.read.put(img)
		}
	}
	return nil
}

// storeAttempts bounds how often a layer is stored again because a
// collection deleted it before the lease held it.
const storeAttempts = 3

// Get returns the image with its blobs held: NOT_FOUND naming them when
// some were collected before they were held (the image was deleted
// meanwhile; a cache hit is then a miss).
func (h leased) Get(ctx context.Context, ref string) (*image.Image, error) {
	if img := h.read.get(ref); img != nil {
		return img, nil
	}
	img, err := h.Images.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := h.holdImage(ctx, img); err != nil {
		return nil, err
	}
	if string(img.ID()) == ref {
		// Only by ID: a tag may move during the build.
		h.read.put(img)
	}
	return img, nil
}

// imageBlobs are the blobs an image needs: manifest, config and layers.
func imageBlobs(img *image.Image) []digest.Digest {
	ds := []digest.Digest{img.ManifestDescriptor().Digest, img.ID()}
	for _, l := range img.Layers() {
		if l.Blob.Digest != "" {
			ds = append(ds, l.Blob.Digest)
		}
	}
	return ds
}

func (h leased) holdImage(ctx context.Context, img *image.Image) error {
	missing, err := h.lease.Hold(ctx, imageBlobs(img)...)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return errdefs.NotFound("image %s: blobs %s are no longer stored", img.ID(), joinDigests(missing))
	}
	return nil
}

// Put holds the image's config and manifest before they are stored (its
// layers are held as they are stored or read), then records it.
//
// The metadata service refuses (ABORTED) an image one of whose blobs a
// collection deleted a moment before (it cannot tell a blob stored again
// from one deleted after the check). The build's blobs are held and
// stored, so when a layer was stored again (see Store), recording it is
// tried again once the moment has passed.
func (h leased) Put(ctx context.Context, n image.New) (*metadatav1.Image, error) {
	rec, blobs, err := image.Assemble(n)
	if err != nil {
		return nil, err
	}
	ds := make([]digest.Digest, 0, len(blobs))
	for _, b := range blobs {
		ds = append(ds, b.Descriptor.Digest)
	}
	if err := h.lease.Add(ctx, ds...); err != nil {
		return nil, err
	}
	pause := time.Second
	deadline := time.Now().Add(recordRetries)
	for {
		img, err := h.Images.Put(ctx, n)
		if !errors.Is(err, errdefs.ErrAborted) || time.Now().After(deadline) {
			return img, err
		}
		var layers []digest.Digest
		for _, l := range n.Layers {
			if l.Blob.Digest != "" {
				layers = append(layers, l.Blob.Digest)
			}
		}
		missing, herr := h.lease.Hold(ctx, layers...)
		if herr != nil {
			return nil, herr
		}
		if len(missing) > 0 {
			return nil, errdefs.Unavailable("image %s: layer blobs %s were collected during the build; try the build again", rec.GetId(), joinDigests(missing))
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		pause = min(2*pause, 4*time.Second)
	}
}

// recordRetries bounds how long Put tries again to record an image the
// metadata service refused because a collection had just deleted (an
// earlier copy of) one of its blobs: past the metadata service's allowance
// for replicas' clocks (5 s).
const recordRetries = 20 * time.Second

func (h leased) DiffID(ctx context.Context, src layer.Source) (image.Layer, error) {
	return h.layers.DiffID(ctx, src)
}

// Store stores the layer and holds its blob, storing it again when a
// collection deleted it before it was held, or while the upload committed
// onto a copy another build had stored (the blob store then finds no blob
// to commit onto: NOT_FOUND).
func (h leased) Store(ctx context.Context, src layer.Source) (image.Layer, error) {
	for range storeAttempts {
		l, err := h.layers.Store(ctx, src)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return image.Layer{}, err
		}
		missing, err := h.lease.Hold(ctx, l.Blob.Digest)
		if err != nil {
			return image.Layer{}, err
		}
		if len(missing) == 0 {
			return l, nil
		}
	}
	return image.Layer{}, errdefs.Unavailable("garbage collection deleted a layer blob %d times as it was stored; try the build again", storeAttempts)
}

func joinDigests(ds []digest.Digest) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

package image

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
)

// gcPage is how many blobs a collection reads from the blob store at a time.
const gcPage = 1000

// Blobs is what the metadata service needs of the blob store;
// *blobclient.Client has it.
type Blobs interface {
	// Exists returns the stored blobs among ds.
	Exists(ctx context.Context, ds []digest.Digest) (map[digest.Digest]blobclient.Info, error)
	// List returns one page of blobs in digest order.
	List(ctx context.Context, pageSize int, pageToken string) ([]blobclient.Info, string, error)
	// Delete removes a blob; ErrNotFound when it is not stored.
	Delete(ctx context.Context, d digest.Digest) error
}

// Collector deletes the blobs no image needs from the blob store.
//
// Safety: a blob is deleted only when it is older than the grace period (so
// uploads and builds in flight keep theirs) and, atomically with marking it
// in the database, no image references it and no lease holds it. PutImage refuses an image whose
// blobs were marked after it checked them, so an image never points at a
// blob a concurrent collection removed.
type Collector struct {
	Images *Service
	Blobs  Blobs
	// Grace is the default grace period.
	Grace time.Duration
	Log   *slog.Logger
	// Now is time.Now when nil.
	Now func() time.Time
}

func (c *Collector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Collect runs one collection, after any that another replica is running.
// A dry run deletes nothing and runs beside them.
func (c *Collector) Collect(ctx context.Context, grace time.Duration, dryRun bool) (*metadatav1.CollectGarbageResponse, error) {
	if !dryRun {
		unlock, _, err := c.Images.LockCollection(ctx, true)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	return c.collect(ctx, grace, dryRun)
}

func (c *Collector) collect(ctx context.Context, grace time.Duration, dryRun bool) (*metadatav1.CollectGarbageResponse, error) {
	start := c.now()
	res := &metadatav1.CollectGarbageResponse{}
	var failed []error
	token := ""
	for {
		page, next, err := c.Blobs.List(ctx, gcPage, token)
		if err != nil {
			return nil, errdefs.Unavailable("listing the blob store: %v", err)
		}
		digests := make([]string, len(page))
		for i, b := range page {
			digests[i] = b.Digest.String()
		}
		refd, err := c.Images.IsReferenced(ctx, digests)
		if err != nil {
			return nil, err
		}
		leased, err := c.Images.IsLeased(ctx, digests)
		if err != nil {
			return nil, err
		}
		size := map[string]int64{}
		var old []string
		for _, b := range page {
			d := b.Digest.String()
			switch {
			case refd[d]:
				res.Referenced++
			case leased[d]:
				res.Leased++
			case start.Sub(b.CreatedAt) < grace:
				res.WithinGrace++
			default:
				old = append(old, d)
				size[d] = b.Size
			}
		}
		if dryRun {
			for _, d := range old {
				res.Deleted = append(res.Deleted, d)
				res.BytesReclaimed += size[d]
			}
		} else if len(old) > 0 {
			marked, err := c.Images.MarkCollectable(ctx, old)
			if err != nil {
				return nil, err
			}
			res.Referenced += int64(len(old) - len(marked)) // referenced or leased since the first look
			for _, d := range marked {
				err := c.Blobs.Delete(ctx, digest.Digest(d))
				if err != nil && !errdefs.IsNotFound(err) {
					failed = append(failed, err)
					if uerr := c.Images.SetCollected(ctx, d, false); uerr != nil {
						return nil, uerr
					}
					continue
				}
				if err := c.Images.SetCollected(ctx, d, true); err != nil {
					return nil, err
				}
				if err == nil {
					res.Deleted = append(res.Deleted, d)
					res.BytesReclaimed += size[d]
				}
			}
		}
		if next == "" {
			break
		}
		token = next
	}
	if c.Log != nil {
		c.Log.Info("garbage collection", "dry_run", dryRun, "deleted", len(res.Deleted), "bytes_reclaimed", res.BytesReclaimed,
			"referenced", res.Referenced, "within_grace", res.WithinGrace, "failed", len(failed), "duration", c.now().Sub(start).String())
	}
	if len(failed) > 0 {
		return res, errdefs.Unavailable("garbage collection deleted %d blobs but could not delete %d: %v", len(res.Deleted), len(failed), errors.Join(failed...))
	}
	return res, nil
}

// Run collects garbage and keeps the event log short every interval until
// ctx ends. A round finding another replica collecting leaves the
// collection to it.
func (c *Collector) Run(ctx context.Context, interval, eventsFor time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.collectUnlessBusy(ctx); err != nil && ctx.Err() == nil {
			c.Log.Warn("periodic garbage collection failed", "error", err.Error())
		}
		if err := c.Images.Housekeep(ctx, eventsFor, 24*time.Hour); err != nil && ctx.Err() == nil {
			c.Log.Warn("pruning old events failed", "error", err.Error())
		}
	}
}

func (c *Collector) collectUnlessBusy(ctx context.Context) error {
	unlock, held, err := c.Images.LockCollection(ctx, false)
	if err != nil {
		return err
	}
	if !held {
		c.Log.Info("garbage collection skipped: another replica is collecting")
		return nil
	}
	defer unlock()
	_, err = c.collect(ctx, c.Grace, false)
	return err
}

// Package lease holds blobs against garbage collection while a build or an
// upload stores them, through the metadata service's leases (as
// containerd's leases hold content): a collection, even with no grace
// period, deletes no blob a live lease holds.
//
// The protocol, for every blob an operation stores before the image that
// needs it is recorded:
//
//	l, _ := lease.Create(ctx, images, id, 0)    // before the first blob
//	defer l.Release(context.WithoutCancel(ctx))
//	// store the blob (or learn its digest some other way) …
//	missing, _ := l.Hold(ctx, blobs, d)        // held from here on
//	// … store again each digest in missing: a collection that ended before
//	// Hold may have deleted it (a blob an image references never is, so
//	// Hold asks the blob store only about the others)
//	// record the image (PutImage); Release then.
//
// A lease whose holder dies expires (24 hours by default), and the
// metadata service then removes it.
package lease

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/durationpb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
)

// Lease is a lease of the metadata service.
type Lease struct {
	// ID names the lease.
	ID string
	// Expires is when it ends unless released before.
	Expires time.Time

	images metadatav1.ImageServiceClient
}

// Blobs is what Hold needs of the blob store; *blobclient.Client has it.
type Blobs interface {
	Exists(ctx context.Context, ds []digest.Digest) (map[digest.Digest]blobclient.Info, error)
}

// Create starts a lease named id (the service chooses a name when empty)
// that lasts expireAfter (the service's default, 24 hours, when zero).
// images must come from lib/grpcclient, whose errors are lib/errdefs kinds.
func Create(ctx context.Context, images metadatav1.ImageServiceClient, id string, expireAfter time.Duration) (*Lease, error) {
	req := &metadatav1.CreateLeaseRequest{Id: id}
	if expireAfter != 0 {
		req.ExpireAfter = durationpb.New(expireAfter)
	}
	r, err := images.CreateLease(ctx, req)
	if err != nil {
		return nil, err
	}
	return &Lease{ID: r.GetLease().GetId(), Expires: r.GetLease().GetExpires().AsTime(), images: images}, nil
}

// Backoff of Add while garbage collection deletes a blob it adds: from
// 50 ms, doubling, to 2 s.
const (
	firstPause = 50 * time.Millisecond
	maxPause   = 2 * time.Second
)

// Add makes the lease hold the blobs, stored or not. While a collection is
// deleting one of them it waits and tries again, until ctx ends. Once it
// returns no collection deletes them; one that ended before may have,
// except of the blobs it returns: those an image references, which are
// stored (the metadata service records an image only once its blobs are,
// and collections leave a referenced blob alone).
func (l *Lease) Add(ctx context.Context, ds ...digest.Digest) (referenced []digest.Digest, err error) {
	req := &metadatav1.AddLeaseResourceRequest{LeaseId: l.ID, Digests: make([]string, len(ds))}
	for i, d := range ds {
		req.Digests[i] = d.String()
	}
	pause := firstPause
	for {
		resp, err := l.images.AddLeaseResource(ctx, req)
		if err == nil {
			for _, r := range resp.GetReferenced() {
				d, err := digest.Parse(r)
				if err != nil {
					return nil, errdefs.Internal("the metadata service named %q as a referenced blob: %v", r, err)
				}
				referenced = append(referenced, d)
			}
			return referenced, nil
		}
		if !errors.Is(err, errdefs.ErrAborted) {
			return nil, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		pause = min(2*pause, maxPause)
	}
}

// Hold adds the blobs to the lease, then returns those the blob store does
// not hold: the caller stores them (again), and they are safe from then on.
// It asks the blob store only about the blobs no image references.
func (l *Lease) Hold(ctx context.Context, blobs Blobs, ds ...digest.Digest) ([]digest.Digest, error) {
	referenced, err := l.Add(ctx, ds...)
	if err != nil {
		return nil, err
	}
	stored := map[digest.Digest]bool{}
	for _, d := range referenced {
		stored[d] = true
	}
	var ask []digest.Digest
	for _, d := range ds {
		if !stored[d] {
			ask = append(ask, d)
		}
	}
	if len(ask) == 0 {
		return nil, nil
	}
	have, err := blobs.Exists(ctx, ask)
	if err != nil {
		return nil, err
	}
	var missing []digest.Digest
	for _, d := range ask {
		if _, ok := have[d]; !ok {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// Release ends the lease: its blobs are garbage again unless an image or
// another lease needs them. Releasing twice is harmless.
func (l *Lease) Release(ctx context.Context) error {
	_, err := l.images.DeleteLease(ctx, &metadatav1.DeleteLeaseRequest{LeaseId: l.ID})
	return err
}

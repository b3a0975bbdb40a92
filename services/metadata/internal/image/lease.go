package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Lease lifetimes: containerd's default, and a bound so that a holder
// that dies cannot keep blobs for long.
const (
	DefaultLeaseExpiry = 24 * time.Hour
	MaxLeaseExpiry     = 7 * 24 * time.Hour
)

// MaxLeaseDigests bounds one AddLeaseBlobs call.
const MaxLeaseDigests = 10000

var leaseID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// CreateLease starts a lease that lasts expireAfter (DefaultLeaseExpiry
// when zero). An empty id gets a random one.
func (s *Service) CreateLease(ctx context.Context, id string, expireAfter time.Duration) (*metadatav1.Lease, error) {
	if id == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b) // never fails (crypto/rand)
		id = hex.EncodeToString(b)
	}
	if !leaseID.MatchString(id) {
		return nil, errdefs.InvalidArgument("lease ID %q: want 1 to 128 letters, digits, '.', '_' or '-'", id).WithReason("INVALID_LEASE").WithDetail("lease", id)
	}
	switch {
	case expireAfter == 0:
		expireAfter = DefaultLeaseExpiry
	case expireAfter < 0 || expireAfter > MaxLeaseExpiry:
		return nil, errdefs.InvalidArgument("lease %s: expiry %v is not between 0 and %v", id, expireAfter, MaxLeaseExpiry).WithReason("INVALID_LEASE").WithDetail("lease", id)
	}
	now := s.now()
	expires := now.Add(expireAfter)
	err := s.b.Update(ctx, func(tx Tx) error { return tx.CreateLease(ctx, id, now, expires) })
	if err != nil {
		return nil, err
	}
	return &metadatav1.Lease{Id: id, Created: timestamppb.New(now), Expires: timestamppb.New(expires)}, nil
}

// AddLeaseBlobs adds blobs to a lease. It fails with ErrNotFound when the
// lease does not exist or has expired, and with ErrAborted when garbage
// collection is deleting one of the blobs (it has marked them and not yet
// finished): the caller tries again after a pause, then makes sure the
// blobs are stored.
//
// It runs in one transaction with the check of the marks; a collection's
// marking transaction checks the leases. So either the lease is seen and
// the blob kept, or the mark is seen here and the call refused (or, for a
// deletion finished before, the caller's own check after finds the blob
// gone).
//
// It returns the digests an image references, read in the same
// transaction: those need no such check. An image is recorded only once
// the blob store holds its blobs and no collection deleted them since
// (PutImage), and a collection marks only blobs no image references, so a
// referenced blob is stored.
func (s *Service) AddLeaseBlobs(ctx context.Context, id string, digests []string) ([]string, error) {
	if len(digests) > MaxLeaseDigests {
		return nil, errdefs.InvalidArgument("%d digests for lease %s in one call; at most %d", len(digests), id, MaxLeaseDigests).WithReason("TOO_MANY_DIGESTS")
	}
	for _, d := range digests {
		if _, err := digest.Parse(d); err != nil {
			return nil, errdefs.InvalidArgument("lease %s: %q is not a digest: %v", id, d, err).WithReason("INVALID_DIGEST").WithDetail("digest", d)
		}
	}
	var referenced []string
	err := s.b.UpdateIdempotent(ctx, func(tx Tx) error {
		now := s.now()
		expires, err := tx.LeaseExpires(ctx, id)
		if err != nil {
			return err
		}
		if !expires.After(now) {
			return errdefs.NotFound("lease %s expired at %s", id, expires.UTC().Format(time.RFC3339)).WithReason("LEASE_NOT_FOUND").WithDetail("lease", id)
		}
		// Marks being deleted now: not deleted yet, nor deleted "since" a
		// time after now.
		busy, err := tx.Collected(ctx, digests, now.Add(MaxLeaseExpiry))
		if err != nil {
			return err
		}
		if len(busy) > 0 {
			return errdefs.Aborted("lease %s: garbage collection is deleting %s; try again after a pause, then store the blobs again",
				id, strings.Join(busy, ", ")).WithReason("BLOB_BEING_COLLECTED").WithDetail("digests", strings.Join(busy, ","))
		}
		if err := tx.AddLeaseBlobs(ctx, id, digests); err != nil {
			return err
		}
		refd, err := tx.Referenced(ctx, digests)
		if err != nil {
			return err
		}
		referenced = nil
		for _, d := range digests {
			if refd[d] {
				referenced = append(referenced, d)
				delete(refd, d) // once, however often it was given
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return referenced, nil
}

// DeleteLease ends a lease, if it exists.
func (s *Service) DeleteLease(ctx context.Context, id string) error {
	return s.b.UpdateIdempotent(ctx, func(tx Tx) error { return tx.DeleteLease(ctx, id) })
}

// IsLeased reports which of the digests an unexpired lease holds.
func (s *Service) IsLeased(ctx context.Context, digests []string) (map[string]bool, error) {
	var out map[string]bool
	err := s.b.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Leased(ctx, digests, s.now())
		return err
	})
	return out, err
}

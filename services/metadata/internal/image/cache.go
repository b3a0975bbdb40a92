package image

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// MaxLookupKeys bounds one LookupCacheRecords call.
const MaxLookupKeys = 10000

func checkKey(k string) error {
	if _, err := digest.Parse(k); err != nil {
		return errdefs.InvalidArgument("cache key %q is not a digest: %v", k, err).WithReason("INVALID_CACHE_KEY").WithDetail("key", k)
	}
	return nil
}

func (s *Service) PutCacheRecord(ctx context.Context, in *metadatav1.CacheRecord, replaces string) (*metadatav1.CacheRecord, error) {
	if in == nil {
		return nil, errdefs.InvalidArgument("a cache record is required")
	}
	if err := checkKey(in.GetKey()); err != nil {
		return nil, err
	}
	rec := proto.Clone(in).(*metadatav1.CacheRecord)
	if in.GetSize() < 0 {
		return nil, errdefs.InvalidArgument("cache record %s: negative size", in.GetKey())
	}
	err := s.update(ctx, func(tx Tx) error {
		id, ok := digestOf(rec.GetImageId())
		if !ok {
			return errdefs.InvalidArgument("cache record %s: image %q is not an image ID", rec.GetKey(), rec.GetImageId()).WithReason("INVALID_CACHE_RECORD")
		}
		ids, err := tx.ImageIDsWithPrefix(ctx, idHex(id), 1)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return errdefs.FailedPrecondition("cache record %s: image %s is not recorded", rec.GetKey(), id).
				WithReason("IMAGE_NOT_FOUND").WithDetail("image", id)
		}
		now := timestamppb.New(s.now())
		rec.ImageId, rec.Created, rec.LastUsed = id, now, now
		if err := tx.PutCacheRecord(ctx, rec, replaces); err != nil {
			return err
		}
		// The record stored: another image's when another writer (two
		// builds of one Dockerfile at once) was first.
		stored, err := tx.CacheRecords(ctx, []string{rec.GetKey()})
		if err != nil {
			return err
		}
		if len(stored) != 1 {
			return errdefs.Internal("cache record %s: %d records after storing it", rec.GetKey(), len(stored))
		}
		rec = stored[0]
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func digestOf(id string) (string, bool) {
	d, err := digest.Parse(id)
	if err != nil {
		return "", false
	}
	return d.String(), true
}

func (s *Service) LookupCacheRecords(ctx context.Context, keys []string) ([]*metadatav1.CacheRecord, error) {
	if len(keys) > MaxLookupKeys {
		return nil, errdefs.InvalidArgument("%d cache keys in one lookup; at most %d", len(keys), MaxLookupKeys).WithReason("TOO_MANY_KEYS")
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	var recs []*metadatav1.CacheRecord
	err := s.b.View(ctx, func(tx Tx) error {
		var err error
		recs, err = tx.CacheRecords(ctx, keys)
		return err
	})
	if err != nil || len(recs) == 0 {
		return recs, err
	}
	// Marking records used is best effort bookkeeping for pruning; it must
	// not slow down or fail a build's lookup when the write lock is busy.
	found := make([]string, len(recs))
	for i, r := range recs {
		found[i] = r.GetKey()
	}
	now := s.now()
	if err := s.b.UpdateIdempotent(ctx, func(tx Tx) error { return tx.TouchCacheRecords(ctx, found, now) }); err == nil {
		for _, r := range recs {
			r.LastUsed = timestamppb.New(now)
		}
	}
	return recs, nil
}

func (s *Service) ListCacheRecords(ctx context.Context, size int, token string) ([]*metadatav1.CacheRecord, string, error) {
	n, err := pageSize(size, 1000, 10000)
	if err != nil {
		return nil, "", err
	}
	var after *CachePosition
	if token != "" {
		t, k, err := decodeToken(token)
		if err != nil {
			return nil, "", err
		}
		after = &CachePosition{LastUsed: t, Key: k}
	}
	var recs []*metadatav1.CacheRecord
	err = s.b.View(ctx, func(tx Tx) error {
		var err error
		recs, err = tx.ListCacheRecords(ctx, after, n+1)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(recs) > n {
		recs = recs[:n]
		last := recs[n-1]
		next = encodeToken(last.GetLastUsed().AsTime().UnixNano(), last.GetKey())
	}
	return recs, next, nil
}

func (s *Service) PruneCacheRecords(ctx context.Context, unusedFor time.Duration) ([]string, error) {
	if unusedFor < 0 {
		return nil, errdefs.InvalidArgument("unused_for %v is negative", unusedFor)
	}
	var keys []string
	err := s.update(ctx, func(tx Tx) error {
		var before time.Time
		if unusedFor > 0 {
			before = s.now().Add(-unusedFor)
		}
		var err error
		keys, err = tx.DeleteCacheRecords(ctx, before)
		return err
	})
	return keys, err
}

func (s *Service) ReferencedBlobs(ctx context.Context, size int, token string) ([]string, string, error) {
	n, err := pageSize(size, 1000, 10000)
	if err != nil {
		return nil, "", err
	}
	after := ""
	if token != "" {
		if after, err = decodeStringToken(token); err != nil {
			return nil, "", err
		}
	}
	var ds []string
	err = s.b.View(ctx, func(tx Tx) error {
		var err error
		ds, err = tx.ReferencedBlobs(ctx, after, n+1)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(ds) > n {
		ds = ds[:n]
		next = encodeStringToken(ds[n-1])
	}
	return ds, next, nil
}

func (s *Service) IsReferenced(ctx context.Context, digests []string) (map[string]bool, error) {
	var out map[string]bool
	err := s.b.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Referenced(ctx, digests)
		return err
	})
	return out, err
}

func (s *Service) DiskUsage(ctx context.Context) (*metadatav1.GetDiskUsageResponse, error) {
	var u Usage
	err := s.b.View(ctx, func(tx Tx) error {
		var err error
		u, err = tx.Usage(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &metadatav1.GetDiskUsageResponse{
		Images:     &metadatav1.DiskUsage{Total: u.Images, Active: u.ActiveImages, Size: u.ImagesSize, Reclaimable: u.ImagesReclaimable},
		Layers:     &metadatav1.DiskUsage{Total: u.Layers, Active: u.ActiveLayers, Size: u.LayersSize, Reclaimable: u.LayersReclaimable},
		BuildCache: &metadatav1.DiskUsage{Total: u.CacheRecords, Active: u.ActiveCacheRecords, Size: u.CacheSize, Reclaimable: u.CacheReclaimable},
	}, nil
}

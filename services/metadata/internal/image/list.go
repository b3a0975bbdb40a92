package image

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/reference"
)

// listBatch is how many candidate rows a list reads at a time when it
// filters rows itself (reference globs).
const listBatch = 500

type listed struct {
	row  ListRow
	refs []Ref
}

func (s *Service) ListImages(ctx context.Context, opts ListOptions) ([]*metadatav1.ImageSummary, string, error) {
	f, err := parseListFilters(opts.Filters, s.now())
	if err != nil {
		return nil, "", err
	}
	size, err := pageSize(opts.PageSize, 1000, 10000)
	if err != nil {
		return nil, "", err
	}
	q := ListQuery{Labels: f.labels}
	if opts.PageToken != "" {
		created, id, err := decodeToken(opts.PageToken)
		if err != nil {
			return nil, "", err
		}
		q.After = &Position{Created: created, ID: id}
	}
	switch {
	case f.dangling != nil && *f.dangling:
		q.Heads, q.NoTag = true, true
	case f.dangling != nil:
		q.HasRef = true
	case !opts.All:
		q.TopLevel = true
	}
	if len(f.patterns) > 0 {
		q.HasRef = true
		prefixes := make([]string, len(f.patterns))
		for i, p := range f.patterns {
			prefixes[i] = literalPrefix(p)
		}
		q.RefPrefix = commonPrefix(prefixes)
	}
	if f.until != nil {
		t := *f.until
		q.CreatedBefore = &t
	}

	// A page without before/since images to look up and without globs to
	// apply here is one query (see the loop below), which needs no
	// transaction.
	view := s.b.View
	if len(f.patterns) == 0 && len(f.before) == 0 && len(f.since) == 0 {
		view = s.b.ViewSingle
	}
	var out []*metadatav1.ImageSummary
	next := ""
	err = view(ctx, func(tx Tx) error {
		out, next = nil, ""
		for _, b := range f.before {
			t, err := s.createdOf(ctx, tx, b)
			if err != nil {
				return err
			}
			if q.CreatedBefore == nil || t.Before(*q.CreatedBefore) {
				q.CreatedBefore = &t
			}
		}
		for _, b := range f.since {
			t, err := s.createdOf(ctx, tx, b)
			if err != nil {
				return err
			}
			if q.CreatedAfter == nil || t.After(*q.CreatedAfter) {
				q.CreatedAfter = &t
			}
		}
		q.Limit = listBatch
		if len(f.patterns) == 0 {
			q.Limit = size + 1
		}
		var found []listed
		for {
			rows, err := tx.ListImages(ctx, q)
			if err != nil {
				return err
			}
			for _, r := range rows {
				rr := r.Refs
				if len(f.patterns) > 0 {
					if rr, err = matching(f.patterns, rr); err != nil {
						return err
					}
					if len(rr) == 0 {
						continue
					}
				}
				found = append(found, listed{row: r, refs: rr})
				if len(found) > size {
					break
				}
			}
			if len(rows) < q.Limit || len(found) > size {
				break
			}
			last := rows[len(rows)-1]
			q.After = &Position{Created: last.Created, ID: last.ID}
		}
		if len(found) > size {
			found = found[:size]
			last := found[size-1].row
			next = encodeToken(last.Created, last.ID)
		}
		out = make([]*metadatav1.ImageSummary, len(found))
		for i, l := range found {
			sum := &metadatav1.ImageSummary{
				Id:             l.row.ID,
				ParentId:       l.row.Parent,
				Size:           l.row.Size,
				Labels:         l.row.Labels,
				ManifestDigest: l.row.ManifestDigest,
			}
			if l.row.Created != 0 {
				sum.Created = timestamppb.New(time.Unix(0, l.row.Created))
			}
			for _, r := range l.refs {
				if r.IsTag {
					sum.RepoTags = append(sum.RepoTags, r.Familiar)
				} else {
					sum.RepoDigests = append(sum.RepoDigests, r.Familiar)
				}
			}
			out[i] = sum
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// createdOf returns the creation time of the image a before/since filter
// names.
func (s *Service) createdOf(ctx context.Context, tx Tx, ref string) (time.Time, error) {
	id, err := s.resolve(ctx, tx, ref)
	if err != nil {
		return time.Time{}, err
	}
	img, err := tx.Image(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	return img.GetCreated().AsTime(), nil
}

// matching keeps the references that one of the globs matches.
func matching(patterns []string, refs []Ref) ([]Ref, error) {
	var out []Ref
	for _, r := range refs {
		parsed, err := reference.Parse(r.Name)
		if err != nil {
			continue
		}
		for _, p := range patterns {
			ok, err := reference.Match(p, parsed)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, r)
				break
			}
		}
	}
	return out, nil
}

package image

import (
	"context"
	"strconv"
	"strings"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
)

// deletion collects what one delete or prune did, in Docker's order.
type deletion struct {
	items     []*metadatav1.DeletedItem
	reclaimed int64
	now       time.Time
}

func (d *deletion) untagged(ctx context.Context, tx Tx, id string, r Ref) error {
	d.items = append(d.items, &metadatav1.DeletedItem{Untagged: r.Familiar})
	return tx.AppendEvent(ctx, event(ctx, d.now, metadatav1.EventAction_EVENT_ACTION_UNTAG, id, r.Familiar, nil))
}

func conflict(id, message string, forceable bool) error {
	force := "cannot be forced"
	if forceable {
		force = "must be forced"
	}
	return errdefs.FailedPrecondition("conflict: unable to delete %s (%s) - %s", reference.TruncateID(id), force, message).
		WithReason("IMAGE_CONFLICT").WithDetail("image", id)
}

func (s *Service) DeleteImage(ctx context.Context, in string, opts DeleteOptions) ([]*metadatav1.DeletedItem, error) {
	var d *deletion
	err := s.update(ctx, func(tx Tx) error {
		d = &deletion{now: s.now()}
		return s.deleteImage(ctx, tx, in, opts.Force, !opts.NoPrune, d)
	})
	if err != nil {
		return nil, err
	}
	return d.items, nil
}

// deleteImage is Docker's ImageService.ImageDelete: a reference removes that
// reference and deletes the image only when it was the last; an ID deletes
// the image, untagging it first when its references are all in one
// repository (or when forced).
func (s *Service) deleteImage(ctx context.Context, tx Tx, in string, force, prune bool, d *deletion) error {
	id, err := s.resolve(ctx, tx, in)
	if err != nil {
		return err
	}
	refsByID, err := tx.Refs(ctx, []string{id})
	if err != nil {
		return err
	}
	refs := refsByID[id]
	removedRepositoryRef := false
	if !isImageIDPrefix(id, in) {
		r, err := reference.ParseDefaultTag(in)
		if err != nil {
			return err
		}
		if _, err := tx.DeleteRef(ctx, r.String()); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		if err := d.untagged(ctx, tx, id, Ref{Name: r.String(), Familiar: r.Familiar()}); err != nil {
			return err
		}
		refs = without(refs, r.String())
		// When the last tag of a repository goes, its digest references go
		// with it.
		if r.Digest() == "" {
			repo := r.Name()
			tagLeft := false
			for _, ref := range refs {
				if ref.IsTag && repoName(ref.Name) == repo {
					tagLeft = true
					break
				}
			}
			if !tagLeft {
				var remaining []Ref
				for _, ref := range refs {
					if !ref.IsTag && repoName(ref.Name) == repo {
						if _, err := tx.DeleteRef(ctx, ref.Name); err != nil {
							return err
						}
						if err := d.untagged(ctx, tx, id, ref); err != nil {
							return err
						}
						continue
					}
					remaining = append(remaining, ref)
				}
				refs = remaining
			}
		}
		if len(refs) > 0 {
			return nil
		}
		removedRepositoryRef = true
	} else if isSingleReference(refs) {
		if !force {
			children, err := tx.HasChildren(ctx, id)
			if err != nil {
				return err
			}
			if children {
				return conflict(id, "image has dependent child images", true)
			}
		}
		for _, ref := range refs {
			if _, err := tx.DeleteRef(ctx, ref.Name); err != nil {
				return err
			}
			if err := d.untagged(ctx, tx, id, ref); err != nil {
				return err
			}
		}
	}
	return s.deleteHelper(ctx, tx, id, force, prune, removedRepositoryRef, d)
}

// deleteHelper is Docker's imageDeleteHelper: it deletes an image unless a
// child or a reference needs it (a reference only when not forced; a child
// when not forced, or when quiet). Quiet conflicts leave the image and end
// the walk silently. With prune, the parent goes next, quietly.
func (s *Service) deleteHelper(ctx context.Context, tx Tx, id string, force, prune, quiet bool, d *deletion) error {
	children, err := tx.HasChildren(ctx, id)
	if err != nil {
		return err
	}
	refsByID, err := tx.Refs(ctx, []string{id})
	if err != nil {
		return err
	}
	refs := refsByID[id]
	var c error
	switch {
	case children && (!force || quiet):
		c = conflict(id, "image has dependent child images", !quiet)
	case !force && len(refs) > 0:
		c = conflict(id, "image is referenced in multiple repositories", true)
	}
	if c != nil {
		if quiet {
			return nil
		}
		return c
	}
	img, err := tx.Image(ctx, id)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if _, err := tx.DeleteRef(ctx, ref.Name); err != nil {
			return err
		}
		if err := d.untagged(ctx, tx, id, ref); err != nil {
			return err
		}
	}
	chains, sizes, err := tx.ChainIDs(ctx, id)
	if err != nil {
		return err
	}
	if err := tx.DeleteImage(ctx, id); err != nil {
		return err
	}
	d.items = append(d.items, &metadatav1.DeletedItem{Deleted: id})
	if err := tx.AppendEvent(ctx, event(ctx, d.now, metadatav1.EventAction_EVENT_ACTION_DELETE, id, "", nil)); err != nil {
		return err
	}
	// A layer goes with the last image that has it, top first; a layer still
	// in use keeps the ones below it.
	for i := len(chains) - 1; i >= 0; i-- {
		used, err := tx.ChainInUse(ctx, chains[i])
		if err != nil {
			return err
		}
		if used {
			break
		}
		d.items = append(d.items, &metadatav1.DeletedItem{Deleted: chains[i]})
		d.reclaimed += sizes[i]
	}
	parent := img.GetParent()
	if !prune || parent == "" {
		return nil
	}
	if ids, err := tx.ImageIDsWithPrefix(ctx, idHex(parent), 1); err != nil || len(ids) == 0 {
		return err
	}
	return s.deleteHelper(ctx, tx, parent, false, true, true, d)
}

func without(refs []Ref, name string) []Ref {
	out := refs[:0:0]
	for _, r := range refs {
		if r.Name != name {
			out = append(out, r)
		}
	}
	return out
}

// repoName returns the repository of a normalized reference.
func repoName(name string) string {
	if i := strings.IndexByte(name, '@'); i >= 0 {
		return name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		return name[:i]
	}
	return name
}

// isSingleReference is Docker's: true when all references are in one
// repository and at most one is a tag.
func isSingleReference(refs []Ref) bool {
	if len(refs) <= 1 {
		return len(refs) == 1
	}
	var single *Ref
	repos := map[string]bool{}
	for i, r := range refs {
		if !r.IsTag {
			repos[repoName(r.Name)] = true
		} else if single == nil {
			repos[repoName(r.Name)] = true
			single = &refs[i]
		} else {
			return false
		}
	}
	if single == nil {
		single = &refs[0]
	}
	return len(repos) == 1 && repos[repoName(single.Name)]
}

// isImageIDPrefix is Docker's: whether in is a prefix of the ID, with or
// without "sha256:".
func isImageIDPrefix(id, in string) bool {
	return strings.HasPrefix(id, in) || strings.HasPrefix(idHex(id), in)
}

func (s *Service) PruneImages(ctx context.Context, all bool, filters []*metadatav1.Filter) ([]*metadatav1.DeletedItem, int64, error) {
	f, err := parsePruneFilters(filters, s.now())
	if err != nil {
		return nil, 0, err
	}
	danglingOnly := !all
	if f.dangling != nil {
		danglingOnly = *f.dangling
	}
	var d *deletion
	err = s.update(ctx, func(tx Tx) error {
		d = &deletion{now: s.now()}
		q := ListQuery{Heads: danglingOnly, Limit: 1000}
		if f.until != nil {
			t := f.until.Add(time.Nanosecond) // Docker keeps images created after until
			q.CreatedBefore = &t
		}
		var candidates []ListRow
		for {
			rows, err := tx.ListImages(ctx, q)
			if err != nil {
				return err
			}
			candidates = append(candidates, rows...)
			if len(rows) < q.Limit {
				break
			}
			last := rows[len(rows)-1]
			q.After = &Position{Created: last.Created, ID: last.ID}
		}
		for _, c := range candidates {
			refsByID, err := tx.Refs(ctx, []string{c.ID})
			if err != nil {
				return err
			}
			refs := refsByID[c.ID]
			if ids, err := tx.ImageIDsWithPrefix(ctx, idHex(c.ID), 1); err != nil {
				return err
			} else if len(ids) == 0 {
				continue // deleted as the parent of an earlier one
			}
			if len(refs) == 0 {
				children, err := tx.HasChildren(ctx, c.ID)
				if err != nil {
					return err
				}
				if children {
					continue
				}
			}
			if len(f.labels) > 0 || len(f.notLabels) > 0 {
				labels, err := tx.Labels(ctx, []string{c.ID})
				if err != nil {
					return err
				}
				if !f.matchLabels(labels[c.ID]) {
					continue
				}
			}
			if len(refs) == 0 {
				if err := s.deleteImage(ctx, tx, idHex(c.ID), false, true, d); err != nil && !isConflict(err) {
					return err
				}
				continue
			}
			shouldDelete := !danglingOnly
			if !shouldDelete {
				shouldDelete = true
				for _, r := range refs {
					if r.IsTag {
						shouldDelete = false
						break
					}
				}
			}
			if !shouldDelete {
				continue
			}
			for _, r := range refs {
				if err := s.deleteImage(ctx, tx, r.Name, false, true, d); err != nil && !isConflict(err) {
					return err
				}
			}
		}
		attrs := map[string]string{"reclaimed": strconv.FormatInt(d.reclaimed, 10)}
		return tx.AppendEvent(ctx, event(ctx, d.now, metadatav1.EventAction_EVENT_ACTION_PRUNE, "", "", attrs))
	})
	if err != nil {
		return nil, 0, err
	}
	return d.items, d.reclaimed, nil
}

// isConflict reports the errors Docker's prune skips an image for.
func isConflict(err error) bool {
	return errdefs.IsFailedPrecondition(err) || errdefs.IsNotFound(err)
}

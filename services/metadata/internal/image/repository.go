package image

import (
	"context"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
)

// A registry's repository is a Docker repository: "team/app" is
// docker.io/team/app, "nginx" and "library/nginx" are docker.io/library/nginx,
// and a tag pushed there is the tag Docker shows as "team/app:1.2". So what
// Strata builds, imports, loads or pulls is in the registry's repositories,
// and what is pushed to them is in Strata's image list.

// MaxTags is the most tags one ListTags call returns.
const MaxTags = 10000

// linuxAmd64 is the platform whose image an index's references stand for,
// as `docker pull` picks it on the hosts Strata builds for.
const linuxAmd64 = "linux/amd64"

// ManifestOptions are the side effects of recording a pushed manifest.
type ManifestOptions struct {
	// Tags to point at the manifest, "1.2".
	Tags []string
	// Image is the image the manifest is, when the caller found it to be one.
	Image *metadatav1.Image
	// BlobsCheckedAt is when the caller saw the manifest's blobs in the blob
	// store (see PutOptions).
	BlobsCheckedAt time.Time
}

func repository(name string) (reference.Reference, error) {
	r, err := reference.ParseRepository(name)
	if err != nil {
		return r, errdefs.InvalidArgument("invalid repository name %q: %v", name, err).WithReason("NAME_INVALID").WithDetail("repository", name)
	}
	return r, nil
}

func parseDigest(s string) (string, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", errdefs.InvalidArgument("invalid digest %q: %v", s, err).WithReason("DIGEST_INVALID").WithDetail("digest", s)
	}
	return d.String(), nil
}

// isDigest tells a digest reference from a tag, which has no colon.
func isDigest(ref string) bool { return strings.Contains(ref, ":") }

func manifestUnknown(repo, ref string) error {
	return errdefs.NotFound("manifest %s not found in repository %s", ref, repo).WithReason("MANIFEST_UNKNOWN").
		WithDetail("repository", repo).WithDetail("reference", ref)
}

func (s *Service) PutManifest(ctx context.Context, repo string, m *metadatav1.Manifest, opts ManifestOptions) (*metadatav1.Manifest, error) {
	r, err := repository(repo)
	if err != nil {
		return nil, err
	}
	p, err := ParseManifest(m.GetMediaType(), m.GetContent(), m.GetDigest())
	if err != nil {
		return nil, err
	}
	d := p.Manifest.GetDigest()
	digestRef, err := r.WithDigest(digest.Digest(d))
	if err != nil {
		return nil, err
	}
	tags := make([]reference.Reference, 0, len(opts.Tags))
	for _, t := range opts.Tags {
		tr, err := r.WithTag(t)
		if err != nil {
			return nil, errdefs.InvalidArgument("invalid tag %q: %v", t, err).WithReason("TAG_INVALID").WithDetail("tag", t)
		}
		tags = append(tags, tr)
	}
	var img *prepared
	if opts.Image != nil {
		if img, err = prepare(opts.Image); err != nil {
			return nil, err
		}
		if got := img.img.GetManifest().GetDigest(); got != d {
			return nil, errdefs.InvalidArgument("image %s has manifest %s, not the pushed %s", img.img.GetId(), got, d).WithReason("INVALID_IMAGE")
		}
		p.Manifest.ImageId = img.img.GetId()
	}
	repoName := r.String()
	err = s.update(ctx, func(tx Tx) error {
		now := s.now()
		var missing []string
		for i, child := range p.Manifests {
			refs, err := tx.RepositoryRefs(ctx, repoName, child)
			if err != nil {
				return err
			}
			if len(refs) == 0 {
				missing = append(missing, child)
				continue
			}
			if p.Platforms[i] == linuxAmd64 && p.Manifest.ImageId == "" {
				cm, err := tx.Manifest(ctx, child)
				if err != nil {
					return err
				}
				p.Manifest.ImageId = cm.GetImageId()
			}
		}
		if len(missing) > 0 {
			return errdefs.FailedPrecondition("index %s lists manifests repository %s does not hold: %s", d, repo, strings.Join(missing, ", ")).
				WithReason("MANIFESTS_MISSING").WithDetail("missing", strings.Join(missing, ","))
		}
		if !opts.BlobsCheckedAt.IsZero() {
			gone, err := tx.Collected(ctx, append([]string{d}, p.Blobs...), opts.BlobsCheckedAt.Add(-clockSkew))
			if err != nil {
				return err
			}
			if len(gone) > 0 {
				return errdefs.Aborted("manifest %s: garbage collection deleted %s while it was being recorded; push the blobs again and retry",
					d, strings.Join(gone, ", ")).WithReason("BLOBS_COLLECTED").WithDetail("digests", strings.Join(gone, ","))
			}
		}
		if img != nil {
			rec := img.img
			rec.RecordedAt = timestamppb.New(now)
			if err := tx.InsertImage(ctx, NewImage{Image: rec, ChainIDs: img.chainIDs, Blobs: img.blobs}); err != nil {
				return err
			}
			if err := tx.AppendEvent(ctx, event(ctx, now, metadatav1.EventAction_EVENT_ACTION_PUSH, rec.GetId(), digestRef.Familiar(), nil)); err != nil {
				return err
			}
		}
		if err := tx.InsertManifest(ctx, NewManifest{Manifest: p.Manifest, Blobs: p.Blobs, Manifests: p.Manifests, Created: now}); err != nil {
			return err
		}
		id := p.Manifest.GetImageId()
		if _, err := tx.SetRef(ctx, Ref{Name: digestRef.String(), Familiar: digestRef.Familiar(), ImageID: id, Repository: repoName, Digest: d}, now); err != nil {
			return err
		}
		for _, t := range tags {
			if _, err := tx.SetRef(ctx, Ref{Name: t.String(), Familiar: t.Familiar(), ImageID: id, IsTag: true, Repository: repoName, Digest: d}, now); err != nil {
				return err
			}
			if id != "" {
				if err := tx.AppendEvent(ctx, event(ctx, now, metadatav1.EventAction_EVENT_ACTION_TAG, id, t.Familiar(), nil)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := proto.Clone(p.Manifest).(*metadatav1.Manifest)
	out.Content, out.Size = nil, int64(len(p.Manifest.GetContent()))
	return out, nil
}

func (s *Service) GetManifest(ctx context.Context, repo, ref string) (*metadatav1.Manifest, error) {
	r, err := repository(repo)
	if err != nil {
		return nil, err
	}
	var out *metadatav1.Manifest
	err = s.b.View(ctx, func(tx Tx) error {
		d, err := s.manifestDigest(ctx, tx, r, repo, ref)
		if err != nil {
			return err
		}
		out, err = tx.Manifest(ctx, d)
		if errdefs.IsNotFound(err) {
			return manifestUnknown(repo, ref)
		}
		return err
	})
	return out, err
}

// manifestDigest resolves a tag or digest of a repository to the digest of
// the manifest the repository holds under it.
func (s *Service) manifestDigest(ctx context.Context, tx Tx, r reference.Reference, repo, ref string) (string, error) {
	if isDigest(ref) {
		d, err := parseDigest(ref)
		if err != nil {
			return "", err
		}
		refs, err := tx.RepositoryRefs(ctx, r.String(), d)
		if err != nil {
			return "", err
		}
		if len(refs) == 0 {
			return "", manifestUnknown(repo, ref)
		}
		return d, nil
	}
	tr, err := r.WithTag(ref)
	if err != nil {
		return "", errdefs.InvalidArgument("invalid tag %q: %v", ref, err).WithReason("TAG_INVALID").WithDetail("tag", ref)
	}
	rf, err := tx.Ref(ctx, tr.String())
	if errdefs.IsNotFound(err) || (err == nil && rf.Digest == "") {
		return "", manifestUnknown(repo, ref)
	}
	return rf.Digest, err
}

func (s *Service) DeleteManifest(ctx context.Context, repo, ref string) ([]string, error) {
	r, err := repository(repo)
	if err != nil {
		return nil, err
	}
	var untagged []string
	err = s.updateRows(ctx, func(tx Tx) error {
		untagged = nil
		now := s.now()
		var refs []Ref
		if isDigest(ref) {
			d, err := parseDigest(ref)
			if err != nil {
				return err
			}
			if refs, err = tx.RepositoryRefs(ctx, r.String(), d); err != nil {
				return err
			}
		} else {
			tr, err := r.WithTag(ref)
			if err != nil {
				return errdefs.InvalidArgument("invalid tag %q: %v", ref, err).WithReason("TAG_INVALID").WithDetail("tag", ref)
			}
			rf, err := tx.Ref(ctx, tr.String())
			if err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			if err == nil {
				refs = []Ref{rf}
			}
		}
		if len(refs) == 0 {
			return manifestUnknown(repo, ref)
		}
		for _, rf := range refs {
			id, err := tx.DeleteRef(ctx, rf.Name)
			if err != nil {
				return err
			}
			untagged = append(untagged, rf.Familiar)
			if id != "" {
				if err := tx.AppendEvent(ctx, event(ctx, now, metadatav1.EventAction_EVENT_ACTION_UNTAG, id, rf.Familiar, nil)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return untagged, err
}

func (s *Service) ListTags(ctx context.Context, repo string, n int, last string) ([]string, bool, error) {
	r, err := repository(repo)
	if err != nil {
		return nil, false, err
	}
	if n <= 0 || n > MaxTags {
		n = MaxTags
	}
	var tags []string
	err = s.b.View(ctx, func(tx Tx) error {
		var err error
		if tags, err = tx.Tags(ctx, r.String(), last, n+1); err != nil || len(tags) > 0 || last != "" {
			return err
		}
		ok, err := tx.HasRepository(ctx, r.String())
		if err == nil && !ok {
			return errdefs.NotFound("repository %s not found", repo).WithReason("NAME_UNKNOWN").WithDetail("repository", repo)
		}
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if len(tags) > n {
		return tags[:n], true, nil
	}
	return tags, false, nil
}

func (s *Service) ListReferrers(ctx context.Context, repo, subject, artifactType string) ([]*metadatav1.Manifest, error) {
	r, err := repository(repo)
	if err != nil {
		return nil, err
	}
	d, err := parseDigest(subject)
	if err != nil {
		return nil, err
	}
	var out []*metadatav1.Manifest
	err = s.b.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Referrers(ctx, r.String(), d, artifactType)
		return err
	})
	return out, err
}

func (s *Service) LinkBlob(ctx context.Context, repo, blob string) error {
	r, err := repository(repo)
	if err != nil {
		return err
	}
	d, err := parseDigest(blob)
	if err != nil {
		return err
	}
	return s.b.Update(ctx, func(tx Tx) error { return tx.LinkBlob(ctx, r.String(), d, s.now()) })
}

func (s *Service) UnlinkBlob(ctx context.Context, repo, blob string) error {
	r, err := repository(repo)
	if err != nil {
		return err
	}
	d, err := parseDigest(blob)
	if err != nil {
		return err
	}
	return s.b.Update(ctx, func(tx Tx) error { return tx.UnlinkBlob(ctx, r.String(), d) })
}

func (s *Service) HasBlob(ctx context.Context, repo, blob string) (bool, error) {
	r, err := repository(repo)
	if err != nil {
		return false, err
	}
	d, err := parseDigest(blob)
	if err != nil {
		return false, err
	}
	var ok bool
	err = s.b.View(ctx, func(tx Tx) error {
		var err error
		ok, err = tx.HasBlob(ctx, r.String(), d)
		return err
	})
	return ok, err
}

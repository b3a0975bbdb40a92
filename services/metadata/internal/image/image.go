package image

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
)

// clockSkew is how far apart the clocks of replicas may be.
const clockSkew = 5 * time.Second

// MinIDPrefix is the fewest hex digits of an image ID that name it.
const MinIDPrefix = 4

// Options tune a Store.
type Options struct {
	// Now returns the current time; time.Now when nil. Tests move it.
	Now func() time.Time
	// EventPoll is how often watchers look for events of other replicas;
	// 250 ms when zero.
	EventPoll time.Duration
}

// Service is the Store over a Backend. Besides the Store it offers what
// garbage collection and housekeeping need, which no client calls.
var _ Store = (*Service)(nil)

// New returns the Store over a backend.
func New(b Backend, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.EventPoll <= 0 {
		opts.EventPoll = 250 * time.Millisecond
	}
	return &Service{b: b, now: opts.Now, poll: opts.EventPoll, wake: make(chan struct{})}
}

type Service struct {
	b    Backend
	now  func() time.Time
	poll time.Duration

	mu   sync.Mutex
	wake chan struct{} // closed and replaced when this replica commits events
}

// committed wakes the watchers of this replica.
func (s *Service) committed() {
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Service) wakeChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}

// update runs fn in a write transaction and wakes the watchers after it.
func (s *Service) update(ctx context.Context, fn func(Tx) error) error {
	return s.woke(s.b.Update(ctx, fn))
}

// updateRows is update through Backend.UpdateRows.
func (s *Service) updateRows(ctx context.Context, fn func(Tx) error) error {
	return s.woke(s.b.UpdateRows(ctx, fn))
}

// woke wakes the watchers after a write that committed (err nil).
func (s *Service) woke(err error) error {
	if err == nil {
		s.committed()
	}
	return err
}

func noSuchImage(in string) error {
	return errdefs.NotFound("No such image: %s", in).WithReason("IMAGE_NOT_FOUND").WithDetail("reference", in)
}

// resolve finds the image a string names, in Docker's order: a full image
// ID; a reference (tag or name@digest); a unique ID prefix.
func (s *Service) resolve(ctx context.Context, tx Tx, in string) (string, error) {
	if id, ok := reference.ParseID(in); ok {
		ids, err := tx.ImageIDsWithPrefix(ctx, id.Encoded(), 1)
		if err != nil {
			return "", err
		}
		if len(ids) == 0 {
			return "", noSuchImage(in)
		}
		return ids[0], nil
	}
	ref, perr := reference.ParseDefaultTag(in)
	if perr == nil {
		id, err := tx.Resolve(ctx, ref.String())
		if err == nil {
			return id, nil
		}
		if !errdefs.IsNotFound(err) {
			return "", err
		}
	}
	if hex, ok := reference.ParseIDPrefix(in); ok && len(hex) >= MinIDPrefix {
		ids, err := tx.ImageIDsWithPrefix(ctx, hex, 2)
		if err != nil {
			return "", err
		}
		switch len(ids) {
		case 1:
			return ids[0], nil
		case 2:
			return "", errdefs.InvalidArgument("image ID prefix %q is ambiguous: more than one image matches", in).
				WithReason("AMBIGUOUS_ID").WithDetail("reference", in)
		}
	}
	if perr != nil {
		return "", perr
	}
	return "", noSuchImage(in)
}

// withRefs fills in an image's RepoTags and RepoDigests, in Docker's order
// (sorted by the normalized reference).
func withRefs(img *metadatav1.Image, refs []Ref) *metadatav1.Image {
	img.RepoTags, img.RepoDigests = nil, nil
	for _, r := range refs {
		if r.IsTag {
			img.RepoTags = append(img.RepoTags, r.Familiar)
		} else {
			img.RepoDigests = append(img.RepoDigests, r.Familiar)
		}
	}
	return img
}

func (s *Service) load(ctx context.Context, tx Tx, id string) (*metadatav1.Image, error) {
	img, refs, err := tx.ImageAndRefs(ctx, id)
	if err != nil {
		return nil, err
	}
	return withRefs(img, refs), nil
}

func (s *Service) PutImage(ctx context.Context, in *metadatav1.Image, opts PutOptions) (*metadatav1.Image, error) {
	p, err := prepare(in)
	if err != nil {
		return nil, err
	}
	tags := make([]reference.Reference, 0, len(opts.Tags))
	for _, t := range opts.Tags {
		r, err := reference.ParseTag(t)
		if err != nil {
			return nil, err
		}
		tags = append(tags, r)
	}
	digests := make([]reference.Reference, 0, len(opts.RepoDigests))
	for _, d := range opts.RepoDigests {
		r, err := reference.ParseCanonical(d)
		if err != nil {
			return nil, err
		}
		digests = append(digests, r)
	}
	id := p.img.GetId()
	var out *metadatav1.Image
	err = s.update(ctx, func(tx Tx) error {
		now := s.now()
		if parent := p.img.GetParent(); parent != "" {
			ids, err := tx.ImageIDsWithPrefix(ctx, digest.Digest(parent).Encoded(), 1)
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				return errdefs.FailedPrecondition("parent image %s of image %s is not recorded", parent, id).
					WithReason("PARENT_NOT_FOUND").WithDetail("parent", parent)
			}
		}
		if !opts.BlobsCheckedAt.IsZero() {
			// A blob that garbage collection deleted after the caller saw it
			// (allowing for clocks of other replicas) is gone: recording the
			// image now would point at nothing.
			gone, err := tx.Collected(ctx, p.blobs, opts.BlobsCheckedAt.Add(-clockSkew))
			if err != nil {
				return err
			}
			if len(gone) > 0 {
				return errdefs.Aborted("image %s: garbage collection deleted %s while the image was being recorded; upload the blobs again and retry",
					id, strings.Join(gone, ", ")).WithReason("BLOBS_COLLECTED").WithDetail("digests", strings.Join(gone, ","))
			}
		}
		img := p.img
		img.RecordedAt = timestamppb.New(now)
		if err := tx.InsertImage(ctx, NewImage{Image: img, ChainIDs: p.chainIDs, Blobs: p.blobs}); err != nil {
			return err
		}
		// Every pull, load or import is an event, as with Docker, even of
		// an image already held.
		if opts.Action != metadatav1.EventAction_EVENT_ACTION_UNSPECIFIED {
			if err := tx.AppendEvent(ctx, event(ctx, now, opts.Action, id, "", nil)); err != nil {
				return err
			}
		}
		for _, r := range tags {
			if err := s.setTag(ctx, tx, r, id, p.img.GetManifest().GetDigest(), now); err != nil {
				return err
			}
		}
		for _, r := range digests {
			ref := Ref{Name: r.String(), Familiar: r.Familiar(), ImageID: id, Repository: r.Repository().String(), Digest: r.Digest().String()}
			if _, err := tx.SetRef(ctx, ref, now); err != nil {
				return err
			}
		}
		out, err = s.load(ctx, tx, id)
		return err
	})
	return out, err
}

// setTag points the tag r at the image id and its manifest d.
func (s *Service) setTag(ctx context.Context, tx Tx, r reference.Reference, id, d string, now time.Time) error {
	ref := Ref{Name: r.String(), Familiar: r.Familiar(), ImageID: id, IsTag: true, Repository: r.Repository().String(), Digest: d}
	if _, err := tx.SetRef(ctx, ref, now); err != nil {
		return err
	}
	return tx.AppendEvent(ctx, event(ctx, now, metadatav1.EventAction_EVENT_ACTION_TAG, id, r.Familiar(), nil))
}

// event is an event of the call ctx serves, naming its caller.
func event(ctx context.Context, t time.Time, action metadatav1.EventAction, id, ref string, attrs map[string]string) *metadatav1.Event {
	ev := &metadatav1.Event{Time: timestamppb.New(t), Action: action, ImageId: id, Reference: ref, Attributes: attrs}
	if who, ok := auth.IdentityFrom(ctx); ok {
		ev.Actor, ev.Via = who.Name, who.Via
	}
	return ev
}

func (s *Service) GetImage(ctx context.Context, ref string) (*metadatav1.Image, error) {
	if img, ok := s.lookup(ctx, ref); ok {
		return img, nil
	}
	var out *metadatav1.Image
	err := s.b.View(ctx, func(tx Tx) error {
		id, err := s.resolve(ctx, tx, ref)
		if err != nil {
			return err
		}
		out, err = s.load(ctx, tx, id)
		if errdefs.IsNotFound(err) {
			return noSuchImage(ref)
		}
		return err
	})
	return out, err
}

// lookup finds the image a full image ID or a reference names in one read
// of the database: the common case of GetImage. It reports false, leaving
// the rest of Docker's resolution and the errors to GetImage, when there is
// no such image or the read fails.
func (s *Service) lookup(ctx context.Context, in string) (*metadatav1.Image, bool) {
	var img *metadatav1.Image
	var refs []Ref
	err := s.b.ViewSingle(ctx, func(tx Tx) error {
		var err error
		if id, ok := reference.ParseID(in); ok {
			img, refs, err = tx.ImageAndRefs(ctx, id.String())
			return err
		}
		r, err := reference.ParseDefaultTag(in)
		if err != nil {
			return err
		}
		img, refs, err = tx.ImageByName(ctx, r.String())
		return err
	})
	if err != nil {
		return nil, false
	}
	return withRefs(img, refs), true
}

func (s *Service) InspectImage(ctx context.Context, ref string) (*metadatav1.ImageInspect, []byte, error) {
	img, err := s.GetImage(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	return inspect(img)
}

func (s *Service) ImageHistory(ctx context.Context, ref string) ([]*metadatav1.HistoryRow, error) {
	var rows []*metadatav1.HistoryRow
	err := s.b.View(ctx, func(tx Tx) error {
		id, err := s.resolve(ctx, tx, ref)
		if err != nil {
			return err
		}
		img, err := tx.Image(ctx, id)
		if err != nil {
			return err
		}
		rows = historyRows(img)
		// Walk the parent chain: an image's own ID goes on the row of its
		// last history entry; rows no image of its own holds stay <missing>.
		cur, idx := img, 0
		for {
			refs, err := tx.Refs(ctx, []string{cur.GetId()})
			if err != nil {
				return err
			}
			if idx < len(rows) {
				rows[idx].Id = cur.GetId()
				for _, r := range refs[cur.GetId()] {
					if r.IsTag {
						rows[idx].Tags = append(rows[idx].Tags, r.Familiar)
					}
				}
			}
			if cur.GetParent() == "" {
				return nil
			}
			parent, err := tx.Image(ctx, cur.GetParent())
			if errdefs.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			next := len(img.GetHistory()) - len(parent.GetHistory())
			if next <= idx || next >= len(rows) {
				return nil
			}
			cur, idx = parent, next
		}
	})
	return rows, err
}

// historyRows turns an image's history into Docker's rows, newest first, all
// <missing>; sizes are the diff sizes of the non-empty steps' layers and
// times are whole seconds, as Docker's API gives them.
func historyRows(img *metadatav1.Image) []*metadatav1.HistoryRow {
	h := img.GetHistory()
	rows := make([]*metadatav1.HistoryRow, len(h))
	layer := 0
	for i, e := range h {
		row := &metadatav1.HistoryRow{
			Id:         "<missing>",
			CreatedBy:  e.GetCreatedBy(),
			Comment:    e.GetComment(),
			EmptyLayer: e.GetEmptyLayer(),
		}
		if e.GetCreated() != nil {
			row.Created = timestamppb.New(time.Unix(e.GetCreated().GetSeconds(), 0))
		}
		if !e.GetEmptyLayer() && layer < len(img.GetLayers()) {
			row.Size = img.GetLayers()[layer].GetDiffSize()
			layer++
		}
		rows[len(h)-1-i] = row
	}
	return rows
}

func (s *Service) TagImage(ctx context.Context, source, target string) (string, string, error) {
	r, err := reference.ParseTag(target)
	if err != nil {
		return "", "", err
	}
	var id string
	// A tag move writes the tag's row and the rows of both images, which is
	// all it decides on (UpdateRows).
	err = s.updateRows(ctx, func(tx Tx) error {
		id, err = s.resolve(ctx, tx, source)
		if err != nil {
			return err
		}
		d, err := s.sourceManifest(ctx, tx, source, id)
		if err != nil {
			return err
		}
		return s.setTag(ctx, tx, r, id, d, s.now())
	})
	if err != nil {
		return "", "", err
	}
	return id, r.Familiar(), nil
}

// sourceManifest returns the manifest a tag made from source points at: the
// one the reference source points at (a pushed manifest of the image, or an
// index), or else the image's own.
func (s *Service) sourceManifest(ctx context.Context, tx Tx, source, id string) (string, error) {
	if _, isID := reference.ParseID(source); !isID {
		if r, err := reference.ParseDefaultTag(source); err == nil {
			rf, err := tx.Ref(ctx, r.String())
			if err == nil && rf.ImageID == id && rf.Digest != "" {
				return rf.Digest, nil
			}
			if err != nil && !errdefs.IsNotFound(err) {
				return "", err
			}
		}
	}
	img, err := tx.Image(ctx, id)
	if err != nil {
		return "", err
	}
	return img.GetManifest().GetDigest(), nil
}

func (s *Service) UntagImage(ctx context.Context, in string) (string, error) {
	r, err := reference.ParseDefaultTag(in)
	if err != nil {
		return "", err
	}
	var id string
	err = s.updateRows(ctx, func(tx Tx) error {
		id, err = tx.DeleteRef(ctx, r.String())
		if errdefs.IsNotFound(err) {
			return errdefs.NotFound("No such image: %s", r.Familiar()).WithReason("TAG_NOT_FOUND").WithDetail("reference", in)
		}
		if err != nil {
			return err
		}
		return tx.AppendEvent(ctx, event(ctx, s.now(), metadatav1.EventAction_EVENT_ACTION_UNTAG, id, r.Familiar(), nil))
	})
	return id, err
}

// idHex returns the hex digits of an image ID.
func idHex(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// MarkCollectable marks, among the digests, those no image references as
// being deleted by garbage collection, and returns them. Until SetCollected
// drops the mark (or long enough after the deletion), PutImage refuses
// images that need them.
func (s *Service) MarkCollectable(ctx context.Context, digests []string) ([]string, error) {
	var out []string
	err := s.b.UpdateIdempotent(ctx, func(tx Tx) error {
		var err error
		out, err = tx.MarkCollectable(ctx, digests, s.now())
		return err
	})
	return out, err
}

// SetCollected records that a marked blob was deleted from the blob store,
// or, when deleted is false, that it was not and may be used again.
func (s *Service) SetCollected(ctx context.Context, digest string, deleted bool) error {
	return s.b.UpdateIdempotent(ctx, func(tx Tx) error { return tx.SetCollected(ctx, digest, deleted, s.now()) })
}

// LockCollection takes the lock that lets one garbage collection run at a
// time among the replicas sharing the database (see
// Backend.LockCollection).
func (s *Service) LockCollection(ctx context.Context, wait bool) (unlock func(), held bool, err error) {
	return s.b.LockCollection(ctx, wait)
}

// Ping checks that the database answers: health follows it.
func (s *Service) Ping(ctx context.Context) error { return s.b.Ping(ctx) }

// Housekeep forgets events older than eventsFor, garbage collection marks
// older than marksFor and expired leases.
func (s *Service) Housekeep(ctx context.Context, eventsFor, marksFor time.Duration) error {
	now := s.now()
	return s.b.UpdateIdempotent(ctx, func(tx Tx) error {
		if _, err := tx.PruneEvents(ctx, now.Add(-eventsFor)); err != nil {
			return err
		}
		if _, err := tx.PruneLeases(ctx, now); err != nil {
			return err
		}
		return tx.PruneMarks(ctx, now.Add(-marksFor))
	})
}

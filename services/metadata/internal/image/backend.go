package image

import (
	"context"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// Backend stores the rows behind a Store. It decides nothing about Docker
// semantics: New's Store does, through transactions.
type Backend interface {
	// Update runs fn in a read-write transaction and commits it when fn
	// returns nil. When the database reports a conflict with a concurrent
	// transaction, Update rolls back and runs fn again, so fn must have no
	// effect outside the transaction.
	Update(ctx context.Context, fn func(Tx) error) error
	// UpdateIdempotent is Update for a fn whose second run, after a first
	// that committed, changes nothing more and returns what the first did:
	// it runs again even when the connection broke during COMMIT, where
	// Update reports that the outcome is unknown.
	UpdateIdempotent(ctx context.Context, fn func(Tx) error) error
	// UpdateRows is Update for a fn that writes every row its decisions rest
	// on, as a tag move writes the reference and the rows of the images it
	// leaves and joins: two such transactions that decide on the same row
	// write it both, and one of them is rolled back and run again. It runs
	// under snapshot isolation, which spares fn the conflicts that
	// serializable isolation finds between transactions that share no row
	// (PostgreSQL tracks reads per index page, so moves of two different
	// tags would conflict). Where writers take turns (SQLite) it is Update.
	UpdateRows(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// ViewSingle runs fn, which must run exactly one read query of the Tx,
	// outside any transaction: one statement reads one consistent state,
	// and the database is spared the transaction's round trips.
	ViewSingle(ctx context.Context, fn func(Tx) error) error
	// EventsAfter returns up to limit events after the position pos, and
	// the position after the last one (pos when there are none). An event
	// appears once the transaction that appended it has committed, and
	// never before an event whose transaction committed before its own
	// began.
	EventsAfter(ctx context.Context, pos EventPosition, limit int) ([]*metadatav1.Event, EventPosition, error)
	// EventPosition returns the position after the events committed so
	// far, or, when since is set, after the last event older than since.
	EventPosition(ctx context.Context, since time.Time) (EventPosition, error)
	// EventsNotify returns a channel that is closed when another replica
	// may have appended events (take it before reading events, then wait on
	// it); nil when the backend cannot tell, and watchers poll.
	EventsNotify() <-chan struct{}
	// LockCollection takes the lock that lets one garbage collection run
	// at a time among every replica sharing the database. With wait it
	// waits for the lock (until ctx ends); without, held is false when
	// another collection holds it. unlock lets go; a replica that dies lets
	// go too.
	LockCollection(ctx context.Context, wait bool) (unlock func(), held bool, err error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}

// EventPosition is a place in the event log, in the backend's own terms.
type EventPosition string

// NewImage is an image row to insert, with what the backend indexes.
type NewImage struct {
	// Image is the record, output-only fields unset but RecordedAt.
	Image *metadatav1.Image
	// ChainIDs are the layer chain IDs, bottom first, one per layer.
	ChainIDs []string
	// Blobs are the digests the image needs: manifest, config, layers.
	Blobs []string
}

// NewManifest is a pushed manifest row to insert.
type NewManifest struct {
	// Manifest holds the digest, media type, content and what derives from
	// it (artifact type, subject, annotations, image ID).
	Manifest *metadatav1.Manifest
	// Blobs are the blobs it needs (config and distributable layers), and
	// Manifests the manifests an index lists.
	Blobs, Manifests []string
	// Created is when it was recorded.
	Created time.Time
}

// Ref is a tag or repository digest pointing at an image.
type Ref struct {
	// Name is the normalized reference, "docker.io/library/nginx:latest" or
	// "docker.io/library/nginx@sha256:…"; references sort by it.
	Name string
	// Familiar is the reference as Docker shows it, "nginx:latest".
	Familiar string
	// ImageID is the image it points at.
	ImageID string
	// IsTag is true for a tag, false for a repository digest.
	IsTag bool
	// Repository is the normalized repository, "docker.io/library/nginx",
	// and Digest the manifest the reference points at; both are set by
	// writers, and read back by Tx.Ref and Tx.RepositoryRefs only.
	Repository, Digest string
}

// Tx is one transaction over the rows. Lookups of absent rows return an
// error matching errdefs.ErrNotFound.
type Tx interface {
	// Image returns the record of an image, with RecordedAt and
	// LastTagTime set and no references.
	Image(ctx context.Context, id string) (*metadatav1.Image, error)
	// ImageAndRefs returns what Image returns and the image's references,
	// sorted by Name, in one read.
	ImageAndRefs(ctx context.Context, id string) (*metadatav1.Image, []Ref, error)
	// ImageByName returns what ImageAndRefs returns for the image a
	// normalized reference points at, in one read.
	ImageByName(ctx context.Context, name string) (*metadatav1.Image, []Ref, error)
	// ImageIDsWithPrefix returns up to limit image IDs whose hex digits
	// start with hexPrefix.
	ImageIDsWithPrefix(ctx context.Context, hexPrefix string, limit int) ([]string, error)
	// InsertImage inserts an image unless one with its ID exists.
	InsertImage(ctx context.Context, img NewImage) error
	// DeleteImage removes an image and its indexes (not its references).
	DeleteImage(ctx context.Context, id string) error
	// HasChildren reports whether any image names id as its parent.
	HasChildren(ctx context.Context, id string) (bool, error)
	// ChainIDs returns an image's layer chain IDs, bottom first, with each
	// layer's diff size.
	ChainIDs(ctx context.Context, id string) ([]string, []int64, error)
	// ChainInUse reports whether any image has the chain ID among its
	// layers.
	ChainInUse(ctx context.Context, chainID string) (bool, error)

	// Resolve returns the image a normalized reference points at.
	Resolve(ctx context.Context, name string) (string, error)
	// Refs returns the references of the images, each list sorted by Name.
	Refs(ctx context.Context, ids []string) (map[string][]Ref, error)
	// SetRef points a reference at an image (ImageID "" for a manifest that
	// is no image) and a manifest, replacing what it pointed at, and returns
	// the previous image ID ("" when it is new). For a tag, now becomes the
	// image's last tag time. A pushed manifest no reference or index points
	// at any more is forgotten.
	SetRef(ctx context.Context, ref Ref, now time.Time) (string, error)
	// DeleteRef removes a reference and returns the image it pointed at,
	// forgetting the pushed manifest nothing points at any more.
	DeleteRef(ctx context.Context, name string) (string, error)
	// Ref returns a reference by its normalized name, with its repository
	// and manifest digest.
	Ref(ctx context.Context, name string) (Ref, error)
	// RepositoryRefs returns the references of a repository that point at
	// the manifest digest, sorted by Name.
	RepositoryRefs(ctx context.Context, repository, digest string) ([]Ref, error)
	// Tags returns up to limit tags of a repository (the part after the
	// colon) in lexical order, after the tag after ("" for the first).
	Tags(ctx context.Context, repository, after string, limit int) ([]string, error)
	// HasRepository reports whether any reference or blob link names the
	// repository.
	HasRepository(ctx context.Context, repository string) (bool, error)

	// InsertManifest records a pushed manifest unless one with its digest
	// is recorded.
	InsertManifest(ctx context.Context, m NewManifest) error
	// Manifest returns a manifest by digest, with its content: a pushed one,
	// or the manifest of an image.
	Manifest(ctx context.Context, digest string) (*metadatav1.Manifest, error)
	// Referrers returns the pushed manifests with the subject that a
	// reference of the repository points at, of the artifact type when it
	// is not empty, in digest order, without their content.
	Referrers(ctx context.Context, repository, subject, artifactType string) ([]*metadatav1.Manifest, error)
	// LinkBlob records that a repository holds a blob.
	LinkBlob(ctx context.Context, repository, digest string, now time.Time) error
	// UnlinkBlob removes that link; ErrNotFound when there is none.
	UnlinkBlob(ctx context.Context, repository, digest string) error
	// HasBlob reports whether the repository links the blob, or one of the
	// images or manifests its references point at needs it.
	HasBlob(ctx context.Context, repository, digest string) (bool, error)
	// ListImages returns up to q.Limit candidate rows in (created, id)
	// descending order, after q.After, that match q's conditions.
	ListImages(ctx context.Context, q ListQuery) ([]ListRow, error)
	// Labels returns the config labels of the images.
	Labels(ctx context.Context, ids []string) (map[string]map[string]string, error)

	// AppendEvent appends an event to the log shared by every replica.
	AppendEvent(ctx context.Context, ev *metadatav1.Event) error
	// PruneEvents removes the events older than before.
	PruneEvents(ctx context.Context, before time.Time) (int64, error)

	// PutCacheRecord inserts a cache record, or replaces the key's record
	// when that is of the same image, of the image replaces, or of one no
	// longer recorded. A record of another recorded image stays: the first
	// writer wins.
	PutCacheRecord(ctx context.Context, rec *metadatav1.CacheRecord, replaces string) error
	// CacheRecords returns the records of the keys whose image exists.
	CacheRecords(ctx context.Context, keys []string) ([]*metadatav1.CacheRecord, error)
	// TouchCacheRecords sets last_used of the keys.
	TouchCacheRecords(ctx context.Context, keys []string, t time.Time) error
	// ListCacheRecords returns up to limit records in (last_used, key)
	// descending order after the given position.
	ListCacheRecords(ctx context.Context, after *CachePosition, limit int) ([]*metadatav1.CacheRecord, error)
	// DeleteCacheRecords removes the records last used before t (every
	// record when t is zero) and returns their keys.
	DeleteCacheRecords(ctx context.Context, before time.Time) ([]string, error)

	// ReferencedBlobs returns up to limit distinct digests that images
	// need, in order, greater than after.
	ReferencedBlobs(ctx context.Context, after string, limit int) ([]string, error)
	// Referenced returns which of the digests some image needs.
	Referenced(ctx context.Context, digests []string) (map[string]bool, error)
	// Usage returns the figures of `docker system df`.
	Usage(ctx context.Context) (Usage, error)

	// MarkCollectable marks, among the digests, those no image references
	// and no lease unexpired at now holds as being deleted by garbage
	// collection, and returns them.
	MarkCollectable(ctx context.Context, digests []string, now time.Time) ([]string, error)
	// SetCollected records that the blob store deleted a marked blob at t,
	// or, when deleted is false, drops the mark.
	SetCollected(ctx context.Context, digest string, deleted bool, t time.Time) error
	// Collected returns which of the digests are being deleted, or were
	// deleted at or after t.
	Collected(ctx context.Context, digests []string, t time.Time) ([]string, error)
	// PruneMarks forgets the deletions finished before t.
	PruneMarks(ctx context.Context, before time.Time) error

	// CreateLease inserts a lease; ErrAlreadyExists when the ID is taken.
	CreateLease(ctx context.Context, id string, created, expires time.Time) error
	// LeaseExpires returns when a lease expires; ErrNotFound when there is
	// no such lease.
	LeaseExpires(ctx context.Context, id string) (time.Time, error)
	// AddLeaseBlobs adds digests to a lease (those it holds already stay).
	AddLeaseBlobs(ctx context.Context, id string, digests []string) error
	// DeleteLease removes a lease and what it holds, if it exists.
	DeleteLease(ctx context.Context, id string) error
	// Leased returns which of the digests a lease unexpired at now holds.
	Leased(ctx context.Context, digests []string, now time.Time) (map[string]bool, error)
	// PruneLeases removes the leases expired at now, and returns how many.
	PruneLeases(ctx context.Context, now time.Time) (int64, error)
}

// ListQuery is what a backend filters in the database; the Store applies
// the rest (reference globs) to the rows it returns.
type ListQuery struct {
	// After is the (created, id) position to continue after; nil starts at
	// the newest image.
	After *Position
	// Limit is the most rows to return.
	Limit int
	// CreatedBefore and CreatedAfter bound created, exclusively (nil: none).
	CreatedBefore, CreatedAfter *time.Time
	// Labels must all match: key present, and value equal when Value is set.
	Labels []LabelMatch
	// Heads keeps only images without children.
	Heads bool
	// HasRef keeps only images with at least one reference; HasTag with at
	// least one tag; NoTag with none.
	HasRef, HasTag, NoTag bool
	// TopLevel keeps images that have a reference or no children (the
	// default view of `docker images`).
	TopLevel bool
	// RefPrefix keeps images with a reference whose familiar form starts
	// with it ("" keeps all).
	RefPrefix string
}

// LabelMatch is one label condition.
type LabelMatch struct {
	Key      string
	Value    string
	HasValue bool
}

// Position is a place in the (created, id) order of images.
type Position struct {
	Created int64 // Unix nanoseconds
	ID      string
}

// CachePosition is a place in the (last_used, key) order of cache records.
type CachePosition struct {
	LastUsed int64 // Unix nanoseconds
	Key      string
}

// ListRow is one image of a list.
type ListRow struct {
	ID             string
	Parent         string
	Created        int64 // Unix nanoseconds
	Size           int64
	ManifestDigest string
	Labels         map[string]string
	// Refs are the image's references, sorted by Name.
	Refs []Ref
}

// Usage holds the figures of `docker system df`.
type Usage struct {
	Images, ActiveImages             int64
	ImagesSize, ImagesReclaimable    int64
	Layers, ActiveLayers             int64
	LayersSize, LayersReclaimable    int64
	CacheRecords, ActiveCacheRecords int64
	CacheSize, CacheReclaimable      int64
}
